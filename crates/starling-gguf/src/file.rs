//! The GGUF v3 container: metadata key/values, tensor descriptors, aligned tensor data
//! (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>), written and read back.

use crate::quant::GgmlType;
use crate::{Error, Result};
use starling_artifacts::{AtomicFile, IoError};
use std::io::{Read, Write};
use std::path::Path;

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The GGUF version written.
pub const VERSION: u32 = 3;
/// Alignment of the tensor data (GGUF's default, `general.alignment`).
pub const ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (UTF-8, length-prefixed).
    Str(String),
    /// `ARRAY` of strings.
    StrArray(Vec<String>),
    /// `ARRAY` of `INT32`.
    I32Array(Vec<i32>),
    /// Any other type, kept as its type id (the reader skips what starling never writes).
    Other(u32),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::StrArray(_) | Value::I32Array(_) => 9,
            Value::Other(t) => *t,
        }
    }

    /// The value as a u32, if it is one.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Value::U32(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A tensor's descriptor: its name, ggml dimensions (innermost first) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name (llama.cpp's, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions innermost first (a torch `[rows, cols]` matrix is `[cols, rows]`).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Elements in the tensor.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of its data.
    pub fn bytes(&self) -> u64 {
        self.ty.row_bytes(self.elements())
    }
}

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::Str(s) => put_str(out, s),
        Value::StrArray(a) => {
            out.extend_from_slice(&8u32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.iter().for_each(|s| put_str(out, s));
        }
        Value::I32Array(a) => {
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::Other(_) => {}
    }
}

/// The header of a GGUF file (metadata and tensor descriptors) before any tensor data.
#[derive(Debug, Clone, Default)]
pub struct GgufHeader {
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor descriptors in file order (offsets filled in by [`GgufHeader::push_tensor`]).
    pub tensors: Vec<TensorInfo>,
}

impl GgufHeader {
    /// Adds a metadata entry.
    pub fn set(&mut self, key: &str, value: Value) {
        self.metadata.push((key.to_string(), value));
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Adds a tensor descriptor after the previous ones (its data offset aligned).
    pub fn push_tensor(&mut self, name: &str, dims: Vec<u64>, ty: GgmlType) {
        let offset = self
            .tensors
            .last()
            .map_or(0, |t| align(t.offset + t.bytes()));
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            dims,
            ty,
            offset,
        });
    }

    /// The header's bytes, padded so the data section starts aligned.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims
                .iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&(t.ty as u32).to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        out.resize(align(out.len() as u64) as usize, 0);
        out
    }
}

/// Writes a GGUF file atomically: the header, then each tensor's encoded data in descriptor order.
/// `data(i)` returns tensor i's encoded bytes. Returns the file's (sha256, bytes).
pub fn write(
    path: &Path,
    header: &GgufHeader,
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<(String, u64)> {
    let mut f = AtomicFile::create(path)?;
    let io = |e| Error::Io(IoError::new(path, e));
    let head = header.to_bytes();
    f.write_all(&head).map_err(io)?;
    let mut at = 0u64;
    for (i, t) in header.tensors.iter().enumerate() {
        f.write_all(&vec![0u8; (t.offset - at) as usize])
            .map_err(io)?;
        let bytes = data(i)?;
        if bytes.len() as u64 != t.bytes() {
            return Err(Error::Format(format!(
                "tensor {}: {} bytes of data for {} expected",
                t.name,
                bytes.len(),
                t.bytes()
            )));
        }
        f.write_all(&bytes).map_err(io)?;
        at = t.offset + t.bytes();
    }
    Ok(f.finish()?)
}

/// A GGUF file read back: its header and where its data section starts.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// Metadata and tensor descriptors.
    pub header: GgufHeader,
    /// Byte offset of the data section.
    pub data_start: u64,
}

struct Cursor<'a> {
    r: &'a mut dyn Read,
    at: u64,
    path: &'a Path,
}

impl Cursor<'_> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).map_err(|e| {
            Error::Format(format!(
                "{}: truncated at byte {} ({e})",
                self.path.display(),
                self.at
            ))
        })?;
        self.at += n as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
    /// A length or count, refused past `max` (a corrupt file must not make us allocate gigabytes).
    fn count(&mut self, what: &str, max: u64) -> Result<usize> {
        let n = self.u64()?;
        if n > max {
            return Err(Error::Format(format!(
                "{}: {what} count {n} at byte {} is not plausible",
                self.path.display(),
                self.at - 8
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.count("string length", 1 << 24)?;
        let b = self.bytes(n)?;
        String::from_utf8(b).map_err(|_| {
            Error::Format(format!(
                "{}: string before byte {} is not UTF-8",
                self.path.display(),
                self.at
            ))
        })
    }
    fn skip_scalar(&mut self, ty: u32) -> Result<()> {
        let n = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                self.string()?;
                return Ok(());
            }
            t => {
                return Err(Error::Format(format!(
                    "{}: unknown value type {t} at byte {}",
                    self.path.display(),
                    self.at
                )))
            }
        };
        self.bytes(n)?;
        Ok(())
    }
    fn value(&mut self, ty: u32) -> Result<Value> {
        Ok(match ty {
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.bytes(1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let elem = self.u32()?;
                let n = self.count("array length", 1 << 28)?;
                match elem {
                    8 => Value::StrArray((0..n).map(|_| self.string()).collect::<Result<_>>()?),
                    5 => Value::I32Array(
                        (0..n)
                            .map(|_| self.u32().map(|v| v as i32))
                            .collect::<Result<_>>()?,
                    ),
                    t => {
                        for _ in 0..n {
                            self.skip_scalar(t)?;
                        }
                        Value::Other(9)
                    }
                }
            }
            t => {
                self.skip_scalar(t)?;
                Value::Other(t)
            }
        })
    }
}

impl GgufFile {
    /// Reads a GGUF file's header (metadata and tensor descriptors), naming the file on errors.
    pub fn read(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::Io(IoError::new(path, e)))?;
        let mut r = std::io::BufReader::new(f);
        let mut c = Cursor {
            r: &mut r,
            at: 0,
            path,
        };
        if c.bytes(4)? != MAGIC {
            return Err(Error::Format(format!(
                "{}: not a GGUF file (no GGUF magic)",
                path.display()
            )));
        }
        let version = c.u32()?;
        if version != VERSION {
            return Err(Error::Format(format!(
                "{}: GGUF version {version}, only {VERSION} is read",
                path.display()
            )));
        }
        let tensors = c.count("tensor", 1 << 20)?;
        let kvs = c.count("metadata", 1 << 20)?;
        let mut header = GgufHeader::default();
        for _ in 0..kvs {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty)?;
            header.metadata.push((key, v));
        }
        for _ in 0..tensors {
            let name = c.string()?;
            let n = c.u32()? as usize;
            if n > 4 {
                return Err(Error::Format(format!(
                    "{}: tensor {name} has {n} dimensions (ggml has at most 4)",
                    path.display()
                )));
            }
            let dims = (0..n).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let ty = GgmlType::from_id(c.u32()?).ok_or_else(|| {
                Error::Format(format!(
                    "{}: tensor {name} has a type starling does not read",
                    path.display()
                ))
            })?;
            let offset = c.u64()?;
            header.tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let data_start = align(c.at);
        Ok(Self { header, data_start })
    }

    /// The raw bytes of tensor `name`.
    pub fn tensor_bytes(&self, path: &Path, name: &str) -> Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        let t = self
            .header
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Format(format!("{}: no tensor {name}", path.display())))?;
        let mut f = std::fs::File::open(path).map_err(|e| Error::Io(IoError::new(path, e)))?;
        f.seek(SeekFrom::Start(self.data_start + t.offset))
            .map_err(|e| Error::Io(IoError::new(path, e)))?;
        let mut b = vec![0u8; t.bytes() as usize];
        f.read_exact(&mut b)
            .map_err(|e| Error::Format(format!("{}: tensor {name}: {e}", path.display())))?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_metadata_and_aligned_tensors() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.gguf");
        let mut h = GgufHeader::default();
        h.set("general.architecture", Value::Str("llama".into()));
        h.set("a.u", Value::U32(7));
        h.set("a.f", Value::F32(1.5));
        h.set("a.b", Value::Bool(true));
        h.set("a.s", Value::StrArray(vec!["x y".into(), "Ġz".into()]));
        h.set("a.i", Value::I32Array(vec![1, -3]));
        h.push_tensor("one", vec![3], GgmlType::F32);
        h.push_tensor("two", vec![2, 2], GgmlType::F32);
        let data = [vec![1f32, 2., 3.], vec![4f32, 5., 6., 7.]];
        write(&path, &h, |i| GgmlType::F32.encode(&data[i])).expect("write");
        let f = GgufFile::read(&path).expect("read");
        assert_eq!(f.header.metadata, h.metadata);
        assert_eq!(f.header.tensors, h.tensors);
        assert_eq!(f.header.tensors[1].offset, 32, "second tensor aligned");
        assert_eq!(f.data_start % ALIGNMENT, 0);
        let two = f.tensor_bytes(&path, "two").expect("bytes");
        assert_eq!(&two[..4], &4f32.to_le_bytes());
        // A wrong byte count is refused, and the half-written file does not appear.
        let bad = dir.path().join("bad.gguf");
        assert!(write(&bad, &h, |_| Ok(vec![0u8; 4])).is_err());
        assert!(!bad.exists());
        // Truncated files are named with the byte where they end.
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&bad, &bytes[..40]).expect("write");
        let e = GgufFile::read(&bad).expect_err("truncated").to_string();
        assert!(e.contains("bad.gguf") && e.contains("truncated"), "{e}");
        // A corrupt length is refused before anything that large is allocated.
        let mut corrupt = bytes.clone();
        corrupt[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&bad, &corrupt).expect("write");
        let e = GgufFile::read(&bad).expect_err("corrupt").to_string();
        assert!(
            e.contains("string length") && e.contains("not plausible"),
            "{e}"
        );
    }
}
