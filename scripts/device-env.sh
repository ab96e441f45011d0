# Sourced by the device-*.sh scripts on a lent GPU machine: the machine's torch libraries (and the
# nvidia wheels beside them) on the library path for the carried binary, B=.dev/starling, and what
# the machine is (GPU, driver, torch, missing libraries).
export PYTHONUNBUFFERED=1
TL=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
LIBS=$TL
for d in $(find "$(dirname "$TL")/.." -maxdepth 4 -type d -path "*nvidia*/lib" 2>/dev/null); do LIBS=$LIBS:$d; done
export LD_LIBRARY_PATH=$LIBS
B=.dev/starling
chmod +x $B
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())'
ldd $B | grep -E "not found" && echo "MISSING LIBS"
