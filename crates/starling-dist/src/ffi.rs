//! The C ABI of `csrc/c10d_shim.cpp`, and the one place in starling that calls C.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};

extern "C" {
    fn starling_c10d_has_nccl() -> c_int;
    fn starling_c10d_new(
        backend: *const c_char,
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        join_timeout_ms: c_int,
        timeout_ms: c_int,
        device: c_int,
        name: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn starling_c10d_subgroup(
        parent: *mut c_void,
        ranks: *const c_int,
        n: c_int,
        name: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn starling_c10d_free(g: *mut c_void);
    fn starling_c10d_allreduce(
        g: *mut c_void,
        data: *mut c_void,
        n: i64,
        dtype: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_c10d_broadcast(
        g: *mut c_void,
        data: *mut c_void,
        n: i64,
        dtype: c_int,
        root: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_c10d_sharded(
        g: *mut c_void,
        op: c_int,
        shard: *mut c_void,
        whole: *mut c_void,
        n: i64,
        dtype: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_c10d_barrier(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn starling_c10d_store_set(
        g: *mut c_void,
        key: *const c_char,
        value: *const u8,
        n: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_c10d_store_get(
        g: *mut c_void,
        key: *const c_char,
        timeout_ms: c_int,
        out: *mut u8,
        cap: usize,
        got: *mut i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// Room for a C++ exception's text.
const ERR_LEN: usize = 4096;

/// A C++ exception's text, or the message of a refused argument.
pub(crate) type CResult<T> = std::result::Result<T, String>;

fn cstring(s: &str) -> CResult<CString> {
    CString::new(s).map_err(|_| format!("`{s}` contains a NUL byte"))
}

fn check(rc: c_int, err: &[u8]) -> CResult<()> {
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(String::from_utf8_lossy(&err[..end]).into_owned())
}

/// Runs one shim call with an error buffer; the C++ exception's text when it fails.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> CResult<()> {
    let mut err = vec![0u8; ERR_LEN];
    let rc = f(err.as_mut_ptr().cast(), ERR_LEN);
    check(rc, &err)
}

/// Whether the shim was compiled with the NCCL backend.
pub(crate) fn has_nccl() -> bool {
    // SAFETY: takes no arguments and reads a compile-time constant.
    unsafe { starling_c10d_has_nccl() == 1 }
}

/// An owned c10d store + backend; freed on drop unless leaked (true) after an abandoned call.
#[derive(Debug)]
pub(crate) struct RawGroup(*mut c_void, bool);

// SAFETY: the C++ group is only used through &mut-free calls that c10d makes thread-safe (each
// backend serialises its own work queue); starling calls it from one thread at a time.
unsafe impl Send for RawGroup {}

/// The collectives between one rank's shard and the whole (codes of the C shim).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sharded {
    /// The sum over ranks of the whole, this rank's share into its shard.
    ReduceScatter = 0,
    /// Every rank's shard into the whole, in rank order.
    AllGather = 1,
}

/// A buffer of `n` elements of dtype code `dtype` at `ptr`, which the caller keeps alive and does
/// not otherwise touch for the length of the call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buffer {
    pub ptr: *mut c_void,
    pub n: i64,
    pub dtype: c_int,
}

impl RawGroup {
    /// Joins (rank 0 hosts) the store at host:port and creates the backend, registered with
    /// c10d as `name`; the rendezvous may take the first timeout, each collective the second.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &str,
        host: &str,
        port: u16,
        rank: usize,
        world: usize,
        (join_timeout_ms, timeout_ms): (u64, u64),
        device: i32,
        name: &str,
    ) -> CResult<Self> {
        let (b, h, nm) = (cstring(backend)?, cstring(host)?, cstring(name)?);
        let mut err = vec![0u8; ERR_LEN];
        let to_int =
            |v: u64, what: &str| c_int::try_from(v).map_err(|_| format!("{what} {v} is too large"));
        let (rank, world) = (
            to_int(rank as u64, "rank")?,
            to_int(world as u64, "world size")?,
        );
        let timeout = to_int(timeout_ms, "timeout (ms)")?;
        let join_timeout = to_int(join_timeout_ms, "join timeout (ms)")?;
        // SAFETY: the strings are NUL-terminated and outlive the call; err has ERR_LEN bytes.
        let g = unsafe {
            starling_c10d_new(
                b.as_ptr(),
                h.as_ptr(),
                c_int::from(port),
                rank,
                world,
                join_timeout,
                timeout,
                device,
                nm.as_ptr(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if g.is_null() {
            check(1, &err)?;
        }
        Ok(Self(g, false))
    }

    /// The subgroup of this group's `ranks` (in that order), registered as `name`; None on a
    /// rank outside it. Every member calls it with the same ranks and name.
    pub fn subgroup(&mut self, ranks: &[usize], name: &str) -> CResult<Option<Self>> {
        let nm = cstring(name)?;
        let ranks: Vec<c_int> = ranks
            .iter()
            .map(|&r| c_int::try_from(r).map_err(|_| format!("rank {r} is too large")))
            .collect::<CResult<_>>()?;
        let n = c_int::try_from(ranks.len()).map_err(|_| "too many ranks".to_string())?;
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: self.0 is a live group; `ranks` holds n ints and `nm` is NUL-terminated, both
        // outliving the call; err has ERR_LEN bytes.
        let g = unsafe {
            starling_c10d_subgroup(
                self.0,
                ranks.as_ptr(),
                n,
                nm.as_ptr(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if g.is_null() {
            check(if err[0] == 0 { 0 } else { 1 }, &err)?;
            return Ok(None);
        }
        Ok(Some(Self(g, false)))
    }

    /// In-place sum over ranks.
    pub fn allreduce(&mut self, b: Buffer) -> CResult<()> {
        let g = self.0;
        // SAFETY: g is a live group; b is valid for n elements (the caller's contract).
        call(|e, len| unsafe { starling_c10d_allreduce(g, b.ptr, b.n, b.dtype, e, len) })
    }

    /// In-place copy of root's buffer to every rank.
    pub fn broadcast(&mut self, b: Buffer, root: usize) -> CResult<()> {
        let g = self.0;
        let root = c_int::try_from(root).map_err(|_| format!("root {root} is too large"))?;
        // SAFETY: as in allreduce.
        call(|e, len| unsafe { starling_c10d_broadcast(g, b.ptr, b.n, b.dtype, root, e, len) })
    }

    /// Reduce-scatter (the sum of `whole` over ranks, this rank's share into `shard`) or
    /// all-gather (every rank's `shard` into `whole`, rank order).
    pub fn sharded(&mut self, op: Sharded, shard: Buffer, whole: Buffer) -> CResult<()> {
        let g = self.0;
        // SAFETY: shard holds n and whole world·n elements of one dtype (checked by the caller).
        call(|e, len| unsafe {
            starling_c10d_sharded(
                g,
                op as c_int,
                shard.ptr,
                whole.ptr,
                shard.n,
                shard.dtype,
                e,
                len,
            )
        })
    }

    /// Waits for every rank.
    pub fn barrier(&mut self) -> CResult<()> {
        let g = self.0;
        // SAFETY: g is a live group.
        call(|e, len| unsafe { starling_c10d_barrier(g, e, len) })
    }

    /// Sets a store key.
    pub fn store_set(&mut self, key: &str, value: &[u8]) -> CResult<()> {
        let (g, k) = (self.0, cstring(key)?);
        // SAFETY: k is NUL-terminated; value is valid for its length; both outlive the call.
        call(|e, len| unsafe {
            starling_c10d_store_set(g, k.as_ptr(), value.as_ptr(), value.len(), e, len)
        })
    }

    /// Reads a store key, waiting up to `timeout_ms`; None when it never came.
    pub fn store_get(
        &mut self,
        key: &str,
        timeout_ms: u64,
        cap: usize,
    ) -> CResult<Option<Vec<u8>>> {
        store_get(self.0 as usize, key, timeout_ms, cap)
    }

    /// [`RawGroup::store_get`] from a helper thread, given up on after `timeout_ms` + 1 s: a
    /// stopped store host never answers c10d's wait. Then the group is leaked (the helper may
    /// still be inside it) and the outer None says the store did not answer.
    pub fn store_get_bounded(
        &mut self,
        key: &str,
        timeout_ms: u64,
        cap: usize,
    ) -> Option<CResult<Option<Vec<u8>>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (g, key) = (self.0 as usize, key.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(store_get(g, &key, timeout_ms, cap));
        });
        match rx.recv_timeout(std::time::Duration::from_millis(timeout_ms + 1000)) {
            Ok(r) => Some(r),
            Err(_) => {
                self.1 = true;
                None
            }
        }
    }
}

/// The body of [`RawGroup::store_get`]; `g` is a live group's address.
fn store_get(g: usize, key: &str, timeout_ms: u64, cap: usize) -> CResult<Option<Vec<u8>>> {
    let k = cstring(key)?;
    let mut err = vec![0u8; ERR_LEN];
    let mut out = vec![0u8; cap];
    let mut got: i64 = -1;
    let timeout = c_int::try_from(timeout_ms).unwrap_or(c_int::MAX);
    // SAFETY: g is a live group (never freed while a helper may use it: see store_get_bounded);
    // k is NUL-terminated; out has cap bytes; got and err are valid for writes.
    let rc = unsafe {
        starling_c10d_store_get(
            g as *mut c_void,
            k.as_ptr(),
            timeout,
            out.as_mut_ptr(),
            cap,
            &mut got,
            err.as_mut_ptr().cast(),
            ERR_LEN,
        )
    };
    check(rc, &err)?;
    Ok(usize::try_from(got).ok().map(|n| {
        out.truncate(n.min(cap));
        out
    }))
}

impl Drop for RawGroup {
    fn drop(&mut self) {
        if self.1 {
            // A helper thread may still be blocked inside the group: leave it to process exit.
            return;
        }
        // SAFETY: self.0 came from starling_c10d_new and is freed once.
        unsafe { starling_c10d_free(self.0) }
    }
}
