//! The C ABI of `csrc/starling_torch.cpp`, and the one module allowed to call it.
#![allow(unsafe_code)]

use crate::AdamWHyper;
use std::ffi::{c_char, c_double, c_int, c_void};
use tch::Tensor;

const ERR_LEN: usize = 4096;

extern "C" {
    fn starling_torch_sync_counter_install(err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_sync_counter_remove();
    fn starling_torch_sync_counter_installed() -> c_int;
    fn starling_torch_retain_freed_memory() -> c_int;
    fn starling_torch_sync_count() -> u64;
    fn starling_torch_sync_count_thread() -> u64;
    fn starling_torch_read_f64(
        t: *mut c_void,
        out: *mut c_double,
        n: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_global_norm(
        ts: *const *mut c_void,
        n: usize,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_foreach_mul_(
        ts: *const *mut c_void,
        n: usize,
        scale: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_foreach_zero_(
        ts: *const *mut c_void,
        n: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_clear_grads(
        ts: *const *mut c_void,
        n: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_fused_adamw_(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        m: *const *mut c_void,
        v: *const *mut c_void,
        n: usize,
        step: *mut c_void,
        lr: c_double,
        lr_tensor: *mut c_void,
        beta1: c_double,
        beta2: c_double,
        wd: c_double,
        eps: c_double,
        found_inf: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// A block's forward as the C++ layer calls it (see `csrc/autograd.cpp`).
type BlockFnC =
    unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_void, *mut c_char, usize) -> c_int;
/// Frees a block callback's context.
type DropFnC = unsafe extern "C" fn(*mut c_void);

extern "C" {
    fn starling_torch_reducer_new(
        params: *const *mut c_void,
        n: usize,
        name: *const c_char,
        bucket_bytes: i64,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn starling_torch_reducer_free(r: *mut c_void);
    fn starling_torch_reducer_arm(r: *mut c_void);
    fn starling_torch_reducer_finish(
        r: *mut c_void,
        scale: c_double,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_reducer_wait_ns(r: *mut c_void) -> u64;
}

extern "C" {
    fn starling_torch_collective_ns() -> u64;
    fn starling_torch_finish_reductions(waited_ns: *mut u64, err: *mut c_char, len: usize)
        -> c_int;
    fn starling_torch_collective(
        op: c_int,
        x: *mut c_void,
        name: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_recompute(
        x: *mut c_void,
        f: BlockFnC,
        ctx: *mut c_void,
        drop: DropFnC,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

extern "C" {
    fn starling_torch_has_cuda() -> c_int;
    fn starling_torch_cuda_max_memory_allocated(
        device: c_int,
        out: *mut i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_cuda_reset_peak(device: c_int, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_cuda_device_name(
        device: c_int,
        out: *mut c_char,
        out_len: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn starling_torch_side_stream_begin(device: c_int, err: *mut c_char, len: usize)
        -> *mut c_void;
    fn starling_torch_side_stream_end(s: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_graph_new(device: c_int, err: *mut c_char, len: usize) -> *mut c_void;
    fn starling_torch_graph_capture_begin(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_graph_capture_end(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_graph_replay(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_graph_free(g: *mut c_void);
}

/// A C++ exception's text.
pub(crate) type CResult<T> = std::result::Result<T, String>;

/// Runs one call with an error buffer; the C++ exception's text when it fails.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> CResult<()> {
    let mut err = vec![0u8; ERR_LEN];
    if f(err.as_mut_ptr().cast(), ERR_LEN) == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(String::from_utf8_lossy(&err[..end]).into_owned())
}

/// The `at::Tensor*` behind a tch tensor. The C++ side reads the handle (and may write the data
/// it points to, as in-place ops do) but never replaces or frees it.
fn raw(t: &Tensor) -> *mut c_void {
    t.as_ptr() as *mut c_void
}

fn raws(ts: &[&Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| raw(t)).collect()
}

pub(crate) fn sync_counter_install() -> CResult<()> {
    // SAFETY: takes only the error buffer, which `call` keeps alive for the call.
    call(|e, l| unsafe { starling_torch_sync_counter_install(e, l) })
}

pub(crate) fn sync_counter_remove() {
    // SAFETY: no arguments; removing an absent observer does nothing.
    unsafe { starling_torch_sync_counter_remove() }
}

pub(crate) fn retain_freed_memory() -> bool {
    // SAFETY: no arguments; mallopt only changes the allocator's thresholds.
    unsafe { starling_torch_retain_freed_memory() != 0 }
}

pub(crate) fn sync_counter_installed() -> bool {
    // SAFETY: reads an atomic flag.
    unsafe { starling_torch_sync_counter_installed() != 0 }
}

pub(crate) fn sync_count() -> u64 {
    // SAFETY: reads an atomic counter.
    unsafe { starling_torch_sync_count() }
}

pub(crate) fn sync_count_thread() -> u64 {
    // SAFETY: reads a thread-local counter.
    unsafe { starling_torch_sync_count_thread() }
}

pub(crate) fn read_f64(t: &Tensor) -> CResult<Vec<f64>> {
    let n = t.numel();
    let mut out = vec![0f64; n];
    // SAFETY: `t` outlives the call; `out` holds exactly n doubles, checked on the C++ side.
    call(|e, l| unsafe { starling_torch_read_f64(raw(t), out.as_mut_ptr(), n, e, l) })?;
    Ok(out)
}

pub(crate) fn global_norm(ts: &[&Tensor]) -> CResult<Tensor> {
    let ptrs = raws(ts);
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: the handles outlive the call; on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe { starling_torch_global_norm(ptrs.as_ptr(), ptrs.len(), &mut out, e, l) })?;
    if out.is_null() {
        return Err("global norm returned no tensor".into());
    }
    // SAFETY: `out` was allocated by `new at::Tensor` and is owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

pub(crate) fn foreach_mul_(ts: &[&Tensor], scale: &Tensor) -> CResult<()> {
    let ptrs = raws(ts);
    // SAFETY: the handles outlive the call.
    call(|e, l| unsafe { starling_torch_foreach_mul_(ptrs.as_ptr(), ptrs.len(), raw(scale), e, l) })
}

pub(crate) fn foreach_zero_(ts: &[&Tensor]) -> CResult<()> {
    let ptrs = raws(ts);
    // SAFETY: the handles outlive the call.
    call(|e, l| unsafe { starling_torch_foreach_zero_(ptrs.as_ptr(), ptrs.len(), e, l) })
}

pub(crate) fn clear_grads(ts: &[&Tensor]) -> CResult<()> {
    let ptrs = raws(ts);
    // SAFETY: the handles outlive the call.
    call(|e, l| unsafe { starling_torch_clear_grads(ptrs.as_ptr(), ptrs.len(), e, l) })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn fused_adamw_(
    params: &[&Tensor],
    grads: &[&Tensor],
    m: &[&Tensor],
    v: &[&Tensor],
    step: &Tensor,
    h: &AdamWHyper,
    lr: Option<&Tensor>,
    found_inf: Option<&Tensor>,
) -> CResult<()> {
    let (p, g, a, b) = (raws(params), raws(grads), raws(m), raws(v));
    let lr_t = lr.map(raw).unwrap_or(std::ptr::null_mut());
    let inf = found_inf.map(raw).unwrap_or(std::ptr::null_mut());
    // SAFETY: the four lists have the same length (checked by the caller) and every handle
    // outlives the call; null optional tensors mean "absent".
    call(|e, l| unsafe {
        starling_torch_fused_adamw_(
            p.as_ptr(),
            g.as_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            p.len(),
            raw(step),
            h.lr,
            lr_t,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            inf,
            e,
            l,
        )
    })
}

pub(crate) fn has_cuda() -> bool {
    // SAFETY: reads a compile-time constant.
    unsafe { starling_torch_has_cuda() == 1 }
}

pub(crate) fn cuda_max_memory_allocated(device: i32) -> CResult<i64> {
    let mut out = 0i64;
    // SAFETY: `out` lives across the call.
    call(|e, l| unsafe { starling_torch_cuda_max_memory_allocated(device, &mut out, e, l) })?;
    Ok(out)
}

pub(crate) fn cuda_reset_peak(device: i32) -> CResult<()> {
    // SAFETY: takes a device index and the error buffer.
    call(|e, l| unsafe { starling_torch_cuda_reset_peak(device, e, l) })
}

pub(crate) fn cuda_device_name(device: i32) -> CResult<String> {
    let mut name = vec![0u8; 256];
    // SAFETY: `name` holds 256 bytes, written NUL-terminated by the C++ side.
    call(|e, l| unsafe {
        starling_torch_cuda_device_name(device, name.as_mut_ptr().cast(), name.len(), e, l)
    })?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Runs a call that returns a new C++ object, or null with the exception's text.
fn make(f: impl FnOnce(*mut c_char, usize) -> *mut c_void) -> CResult<*mut c_void> {
    let mut out = std::ptr::null_mut();
    let r = call(|e, l| {
        out = f(e, l);
        c_int::from(out.is_null())
    });
    r.map(|()| out)
}

/// A side stream made current on `device` (a handle for [`side_stream_end`]).
pub(crate) fn side_stream_begin(device: i32) -> CResult<*mut c_void> {
    // SAFETY: takes a device index and the error buffer; returns an owned handle or null.
    make(|e, l| unsafe { starling_torch_side_stream_begin(device, e, l) })
}

/// Restores the stream `s` replaced and frees `s` (which must not be used again).
pub(crate) fn side_stream_end(s: *mut c_void) -> CResult<()> {
    // SAFETY: `s` came from `side_stream_begin` and is consumed exactly once.
    call(|e, l| unsafe { starling_torch_side_stream_end(s, e, l) })
}

/// A new CUDA graph on `device` (freed by [`graph_free`]).
pub(crate) fn graph_new(device: i32) -> CResult<*mut c_void> {
    // SAFETY: takes a device index and the error buffer; returns an owned handle or null.
    make(|e, l| unsafe { starling_torch_graph_new(device, e, l) })
}

/// Begins capturing into `g`.
pub(crate) fn graph_capture_begin(g: *mut c_void) -> CResult<()> {
    // SAFETY: `g` is a live handle from `graph_new`.
    call(|e, l| unsafe { starling_torch_graph_capture_begin(g, e, l) })
}

/// Ends capturing into `g`.
pub(crate) fn graph_capture_end(g: *mut c_void) -> CResult<()> {
    // SAFETY: `g` is a live handle from `graph_new`.
    call(|e, l| unsafe { starling_torch_graph_capture_end(g, e, l) })
}

/// Launches `g`.
pub(crate) fn graph_replay(g: *mut c_void) -> CResult<()> {
    // SAFETY: `g` is a live handle from `graph_new`.
    call(|e, l| unsafe { starling_torch_graph_replay(g, e, l) })
}

/// Frees `g`.
pub(crate) fn graph_free(g: *mut c_void) {
    // SAFETY: `g` came from `graph_new` and is freed exactly once (by the owner's Drop).
    unsafe { starling_torch_graph_free(g) }
}

/// The callback a recomputed block runs: owned by the C++ graph, called at most once at a time.
type Block = Box<dyn FnMut(&Tensor) -> Tensor + Send>;

/// Runs the boxed block of `ctx` on the handle `x` (taking it) and hands back a new handle.
unsafe extern "C" fn call_block(
    ctx: *mut c_void,
    x: *mut c_void,
    out: *mut *mut c_void,
    err: *mut c_char,
    len: usize,
) -> c_int {
    // SAFETY: `x` is a new `at::Tensor*` the C++ side gave up; the Tensor frees it.
    let x = unsafe { Tensor::from_ptr(x.cast()) };
    // SAFETY: `ctx` is the `Box<Block>` made by `recompute`, alive until `drop_block`, and the
    // C++ side never calls it twice at once.
    let f = unsafe { &mut *(ctx as *mut Block) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&x))) {
        Ok(mut y) => {
            // The C++ side copies the handle and deletes this one (as tch's own drop would).
            let p = y.as_mut_ptr();
            std::mem::forget(y);
            // SAFETY: `out` points to a slot the C++ side owns.
            unsafe { *out = p.cast() };
            0
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            let n = msg.len().min(len.saturating_sub(1));
            if n > 0 || len > 0 {
                // SAFETY: `err` holds `len` bytes; n + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
                    *err.add(n) = 0;
                }
            }
            1
        }
    }
}

/// Frees the boxed block of `ctx`.
unsafe extern "C" fn drop_block(ctx: *mut c_void) {
    // SAFETY: `ctx` came from `Box::into_raw` in `recompute` and is dropped once.
    drop(unsafe { Box::from_raw(ctx as *mut Block) });
}

pub(crate) fn recompute(x: &Tensor, f: Block) -> CResult<Tensor> {
    let ctx = Box::into_raw(Box::new(f)) as *mut c_void;
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `x` outlives the call; `ctx` is handed over (the C++ side frees it through
    // `drop_block`); on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe {
        starling_torch_recompute(raw(x), call_block, ctx, drop_block, &mut out, e, l)
    })?;
    if out.is_null() {
        return Err("recompute returned no tensor".into());
    }
    // SAFETY: allocated by `new at::Tensor`, owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

pub(crate) fn collective(op: i32, x: &Tensor, group: &str) -> CResult<Tensor> {
    let name =
        std::ffi::CString::new(group).map_err(|_| format!("group name `{group}` holds a NUL"))?;
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `x` and `name` outlive the call; on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe { starling_torch_collective(op, raw(x), name.as_ptr(), &mut out, e, l) })?;
    if out.is_null() {
        return Err("collective returned no tensor".into());
    }
    // SAFETY: allocated by `new at::Tensor`, owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// Waits for the deferred reductions and adds them into their leaves' gradients; the time waited.
pub(crate) fn finish_reductions() -> CResult<u64> {
    let mut ns = 0u64;
    // SAFETY: `ns` outlives the call.
    call(|e, l| unsafe { starling_torch_finish_reductions(&mut ns, e, l) })?;
    Ok(ns)
}

pub(crate) fn collective_ns() -> u64 {
    // SAFETY: reads an atomic counter.
    unsafe { starling_torch_collective_ns() }
}

/// An owned C++ reducer (see `csrc/reducer.cpp`).
#[derive(Debug)]
pub(crate) struct RawReducer(*mut c_void);

// SAFETY: the reducer's state is guarded by its own mutex on the C++ side; Rust calls it from
// one thread at a time (`&mut self`).
unsafe impl Send for RawReducer {}

impl RawReducer {
    pub(crate) fn new(params: &[&Tensor], group: &str, bucket_bytes: i64) -> CResult<Self> {
        let name = std::ffi::CString::new(group)
            .map_err(|_| format!("group name `{group}` holds a NUL"))?;
        let ptrs = raws(params);
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: the handles and the name outlive the call (the C++ side copies the tensors'
        // handles); err holds ERR_LEN bytes.
        let r = unsafe {
            starling_torch_reducer_new(
                ptrs.as_ptr(),
                ptrs.len(),
                name.as_ptr(),
                bucket_bytes,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if r.is_null() {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            return Err(String::from_utf8_lossy(&err[..end]).into_owned());
        }
        Ok(Self(r))
    }

    pub(crate) fn arm(&mut self) {
        // SAFETY: self.0 is a live reducer.
        unsafe { starling_torch_reducer_arm(self.0) }
    }

    pub(crate) fn finish(&mut self, scale: f64) -> CResult<()> {
        let r = self.0;
        // SAFETY: r is a live reducer; the error buffer is `call`'s.
        call(|e, l| unsafe { starling_torch_reducer_finish(r, scale, e, l) })
    }

    pub(crate) fn wait_ns(&self) -> u64 {
        // SAFETY: self.0 is a live reducer.
        unsafe { starling_torch_reducer_wait_ns(self.0) }
    }
}

impl Drop for RawReducer {
    fn drop(&mut self) {
        // SAFETY: made by starling_torch_reducer_new, freed once.
        unsafe { starling_torch_reducer_free(self.0) }
    }
}

extern "C" {
    fn starling_torch_profiler_start(cuda: c_int, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_profiler_stop(out: *mut *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn starling_torch_profile_len(rec: *const c_void) -> usize;
    #[allow(clippy::too_many_arguments)]
    fn starling_torch_profile_event(
        rec: *const c_void,
        i: usize,
        name: *mut *const c_char,
        name_len: *mut usize,
        kind: *mut u8,
        start_ns: *mut u64,
        dur_ns: *mut u64,
        thread: *mut u64,
    ) -> c_int;
    fn starling_torch_profile_free(rec: *mut c_void);
}

/// One event of a profiler recording, as the C++ side holds it.
pub(crate) struct RawEvent {
    pub name: String,
    pub kind: u8,
    pub start_ns: u64,
    pub dur_ns: u64,
    pub thread: u64,
}

pub(crate) fn profiler_start(cuda: bool) -> CResult<()> {
    // SAFETY: takes a flag and the error buffer, which `call` keeps alive for the call.
    call(|e, l| unsafe { starling_torch_profiler_start(c_int::from(cuda), e, l) })
}

pub(crate) fn profiler_stop() -> CResult<Vec<RawEvent>> {
    let mut rec: *mut c_void = std::ptr::null_mut();
    // SAFETY: on success `rec` is a new recording we own and free below.
    call(|e, l| unsafe { starling_torch_profiler_stop(&mut rec, e, l) })?;
    if rec.is_null() {
        return Err("the profiler returned no recording".into());
    }
    // SAFETY: `rec` is a live recording until freed at the end of this function.
    let n = unsafe { starling_torch_profile_len(rec) };
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let (mut name, mut name_len) = (std::ptr::null::<c_char>(), 0usize);
        let (mut kind, mut start_ns, mut dur_ns, mut thread) = (0u8, 0u64, 0u64, 0u64);
        // SAFETY: `i < n`; every out-pointer is a live local; the name points into `rec`.
        let rc = unsafe {
            starling_torch_profile_event(
                rec,
                i,
                &mut name,
                &mut name_len,
                &mut kind,
                &mut start_ns,
                &mut dur_ns,
                &mut thread,
            )
        };
        if rc != 0 || name.is_null() {
            continue;
        }
        // SAFETY: `name` points at `name_len` bytes owned by `rec`, which is still alive.
        let bytes = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), name_len) };
        events.push(RawEvent {
            name: String::from_utf8_lossy(bytes).into_owned(),
            kind,
            start_ns,
            dur_ns,
            thread,
        });
    }
    // SAFETY: `rec` came from starling_torch_profiler_stop and is freed once.
    unsafe { starling_torch_profile_free(rec) };
    Ok(events)
}

extern "C" {
    fn starling_torch_cross_entropy(
        logits: *mut c_void,
        targets: *mut c_void,
        consuming: c_int,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// `consuming`: the caller hands the logits over (see `starling_torch_cross_entropy`).
pub(crate) fn cross_entropy(logits: &Tensor, targets: &Tensor, consuming: bool) -> CResult<Tensor> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: both handles outlive the call; on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe {
        let (x, t) = (raw(logits), raw(targets));
        starling_torch_cross_entropy(x, t, c_int::from(consuming), &mut out, e, l)
    })?;
    if out.is_null() {
        return Err("cross-entropy returned no tensor".into());
    }
    // SAFETY: allocated by `new at::Tensor`, owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

extern "C" {
    fn starling_torch_swiglu(
        y: *mut c_void,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

extern "C" {
    fn starling_torch_rms_norm(
        x: *mut c_void,
        w: *mut c_void,
        eps: c_double,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> CResult<Tensor> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `x` and `w` outlive the call; on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe { starling_torch_rms_norm(raw(x), raw(w), eps, &mut out, e, l) })?;
    if out.is_null() {
        return Err("rms_norm returned no tensor".into());
    }
    // SAFETY: allocated by `new at::Tensor`, owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

pub(crate) fn swiglu(y: &Tensor) -> CResult<Tensor> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `y` outlives the call; on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe { starling_torch_swiglu(raw(y), &mut out, e, l) })?;
    if out.is_null() {
        return Err("swiglu returned no tensor".into());
    }
    // SAFETY: allocated by `new at::Tensor`, owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn starling_torch_qkv_rope(
        y: *mut c_void,
        cos: *mut c_void,
        sin: *mut c_void,
        heads: i64,
        kv_heads: i64,
        head_dim: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

pub(crate) fn qkv_rope(
    y: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    [heads, kv_heads, head_dim]: [i64; 3],
) -> CResult<[Tensor; 3]> {
    let mut out: [*mut c_void; 3] = [std::ptr::null_mut(); 3];
    // SAFETY: the handles outlive the call; `out` has room for the three new at::Tensor* it
    // receives on success, which we then own.
    call(|e, l| unsafe {
        starling_torch_qkv_rope(
            raw(y),
            raw(cos),
            raw(sin),
            heads,
            kv_heads,
            head_dim,
            out.as_mut_ptr(),
            e,
            l,
        )
    })?;
    if out.iter().any(|p| p.is_null()) {
        return Err("qkv_rope returned no tensor".into());
    }
    // SAFETY: each was allocated by `new at::Tensor`, owned (and freed) by its Tensor now.
    Ok(out.map(|p| unsafe { Tensor::from_ptr(p.cast()) }))
}

extern "C" {
    fn starling_torch_causal_attention(
        q: *mut c_void,
        k: *mut c_void,
        v: *mut c_void,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

pub(crate) fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> CResult<Tensor> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: the inputs outlive the call; on success `out` is a new at::Tensor* we own.
    call(|e, l| unsafe {
        starling_torch_causal_attention(raw(q), raw(k), raw(v), &mut out, e, l)
    })?;
    if out.is_null() {
        return Err("causal attention returned no tensor".into());
    }
    // SAFETY: allocated by `new at::Tensor`, owned (and freed) by the Tensor now.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    /// Logits handed over hold their gradient after the forward: each row sums to 0 (the
    /// softmax's 1/count minus the target's 1/count), where logits would not; fp32 (the CPU's
    /// rows) and fp64 (the chunked path other kinds and CUDA take).
    #[test]
    fn consuming_cross_entropy_writes_the_gradient_over_the_logits() {
        fn row_sums<T: Copy + Into<f64>>(kind: Kind) -> Vec<f64> {
            tch::manual_seed(6);
            let h = Tensor::randn([7, 16], (kind, Device::Cpu)).set_requires_grad(true);
            let w = Tensor::randn([41, 16], (kind, Device::Cpu));
            let logits = h.matmul(&w.tr());
            let p = logits.data_ptr() as *const T;
            let t = Tensor::from_slice(&[0i64, 40, 3, 3, 9, 1, 2]);
            let loss = crate::cross_entropy_consuming(logits, &t).unwrap();
            // SAFETY: the logits' storage (7 x 41 elements of T, the kind asked for) is kept
            // alive by `loss`'s graph, which saved it as the gradient, until `loss` is dropped.
            let rows = unsafe { std::slice::from_raw_parts(p, 7 * 41) };
            let sums = rows
                .chunks(41)
                .map(|r| r.iter().map(|&x| x.into()).sum())
                .collect();
            drop(loss);
            sums
        }
        for (kind, sums, tol) in [
            (Kind::Float, row_sums::<f32>(Kind::Float), 1e-6),
            (Kind::Double, row_sums::<f64>(Kind::Double), 1e-12),
        ] {
            for (r, sum) in sums.iter().enumerate() {
                assert!(
                    sum.abs() < tol,
                    "{kind:?} row {r} sums to {sum}: not the gradient"
                );
            }
        }
    }
}
