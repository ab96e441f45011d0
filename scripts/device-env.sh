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

# synth_tokens DIR VOCAB: 20,000 synthetic posts → corpus DIR/c → tokenizer DIR/tok → shards DIR/tokens.
synth_tokens() {
  mkdir -p "$1"
  $B synth --posts 20000 --out "$1/s.jsonl.zst" 2>&1 | tail -1
  $B corpus "$1/s.jsonl.zst" --out "$1/c" 2>&1 | tail -2
  $B tokenizer train --corpus "$1/c" --vocab "$2" --out "$1/tok" 2>&1 | tail -1
  $B tokens --corpus "$1/c" --tokenizer "$1/tok" --out "$1/tokens" 2>&1 | tail -1
}
