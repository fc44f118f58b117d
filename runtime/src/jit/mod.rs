//! The JIT backend: a lowered graph, its kernels compiled for this CPU, packed weights, one
//! activation arena, the KV caches and a thread pool.
//!
//! Invariants: weights are packed once at load (the GGUF bytes of packed matrices are then
//! released from the process's resident set when they came from a mapped file); no
//! activation memory is allocated per call except when `S` grows beyond what the arena was
//! planned for; a failed call leaves the KV caches as they were (`past` only advances on
//! success, and rows past `past` are never read).

pub mod lower;
pub mod pool;

use std::time::Instant;

use lpuc_codegen::jit::{CompileStats, Host};
use lpuc_codegen::kernels::module_for;
use lpuc_codegen::pack;
use lpuc_ir::dtype::DType;
use lpuc_ir::graph::Graph;
use lpuc_ir::weights::WeightStore;

use lower::{Act, Plan, Rows, Step};
use pool::Pool;

/// Page-aligned, zero-initialised memory straight from an anonymous `mmap`: untouched pages
/// cost no RSS (the KV caches rely on that: a 4k-token cache is 190 MB of address space but
/// only the rows written are resident) and nothing is ever memset, which the allocator does
/// when it recycles heap memory for `calloc`. Kernels use unaligned loads.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    /// The whole mapping (`ptr` may sit inside it, aligned further).
    map: *mut u8,
    map_len: usize,
}

unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Result<AlignedBuf, String> {
        Self::map(len, false)
    }

    /// As [`AlignedBuf::zeroed`], 2 MiB-aligned and marked for transparent huge pages: for
    /// data that is streamed whole every token (packed weights), where 4 KiB pages cost a
    /// TLB miss every 4 KiB. Falls back to normal pages where THP is off.
    pub fn zeroed_huge(len: usize) -> Result<AlignedBuf, String> {
        Self::map(len, true)
    }

    fn map(len: usize, huge: bool) -> Result<AlignedBuf, String> {
        if len == 0 {
            return Ok(AlignedBuf {
                ptr: std::ptr::null_mut(),
                len: 0,
                map: std::ptr::null_mut(),
                map_len: 0,
            });
        }
        const HUGE: usize = 2 << 20;
        let map_len = if huge {
            len.checked_add(HUGE)
                .ok_or_else(|| format!("cannot map {len} bytes"))?
        } else {
            len
        };
        // SAFETY: a fresh private anonymous mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "out of memory mapping {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let map = ptr as *mut u8;
        let mut p = map;
        if huge {
            p = (map as usize).div_ceil(HUGE).wrapping_mul(HUGE) as *mut u8;
            // SAFETY: `[p, p + len)` lies inside the mapping; advice only.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::madvise(p as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
        Ok(AlignedBuf {
            ptr: p,
            len,
            map,
            map_len,
        })
    }
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `zeroed`, unmapped once.
            unsafe { libc::munmap(self.map as *mut libc::c_void, self.map_len) };
        }
    }
}

/// Per-step-kind time, when profiling is on.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub by_kind: Vec<(&'static str, f64, u64)>,
}

pub struct JitForward<'w> {
    plan: Plan,
    /// The kernel tier the kernels were compiled for.
    pub tier: lpuc_host::Tier,
    addrs: Vec<usize>,
    _kernels: lpuc_codegen::Kernels,
    /// (address, bytes) of each packed matrix inside `weights_buf`.
    packed: Vec<(usize, usize)>,
    _weights_buf: AlignedBuf,
    norms: Vec<Vec<f32>>,
    store: &'w dyn WeightStore,
    caches: Vec<AlignedBuf>,
    arena: AlignedBuf,
    ropetabs: Vec<AlignedBuf>,
    past: usize,
    pool: Pool,
    name: String,
    pub compile: CompileStats,
    profile: Option<Vec<(f64, u64)>>,
}

/// Why a token id is refused, before anything runs.
fn check_ids(tokens: &[u32], vocab: usize) -> Result<(), String> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(t) => Err(format!("token id {t} out of range 0..{vocab}")),
        None => Ok(()),
    }
}

impl<'w> JitForward<'w> {
    /// Lowers `g`, compiles (or loads cached) kernels, packs the weights.
    pub fn new(g: &Graph, weights: &'w dyn WeightStore, threads: usize) -> Result<Self, String> {
        Self::build(g, weights, threads, false, Host::select(None)?)
    }

    /// As [`JitForward::new`], compiling for `host`'s kernel tier.
    pub fn new_on(
        g: &Graph,
        weights: &'w dyn WeightStore,
        threads: usize,
        host: Host,
    ) -> Result<Self, String> {
        Self::build(g, weights, threads, false, host)
    }

    /// As [`JitForward::new`] for a memory-mapped GGUF file: after packing, the mapped pages
    /// of packed tensors are dropped from the resident set (they are re-read from the file
    /// only if touched again, e.g. embedding rows).
    pub fn from_gguf(
        g: &Graph,
        weights: &'w lpuc_ir::import::GgufWeights,
        threads: usize,
    ) -> Result<Self, String> {
        Self::build(g, weights, threads, true, Host::select(None)?)
    }

    /// As [`JitForward::from_gguf`], compiling for `host`'s kernel tier.
    pub fn from_gguf_on(
        g: &Graph,
        weights: &'w lpuc_ir::import::GgufWeights,
        threads: usize,
        host: Host,
    ) -> Result<Self, String> {
        Self::build(g, weights, threads, true, host)
    }

    fn build(
        g: &Graph,
        store: &'w dyn WeightStore,
        threads: usize,
        release: bool,
        host: Host,
    ) -> Result<Self, String> {
        let tier = host.tier;
        let plan = lower::lower(g, host.vnni512())?;
        let m = module_for(&plan.specs);
        let syms: Vec<String> = plan.specs.iter().map(|s| s.symbol()).collect();
        let kernels = lpuc_codegen::jit::load(&m, &host, &syms)?;
        let addrs = syms.iter().map(|s| kernels.addr(s)).collect();
        let compile = kernels.stats.clone();
        let pool = Pool::new(threads);
        // Pack every matrix into one huge-page-backed buffer (the decode streams all of it
        // every token; per-matrix buffers are mostly under 2 MiB and would get 4 KiB pages),
        // split across the pool's threads.
        let mut offsets = Vec::with_capacity(plan.packs.len());
        let mut total = 0usize;
        for pd in &plan.packs {
            let bits = pack::check_packable(pd.dtype, pd.n, pd.k)
                .map_err(|e| format!("weight \"{}\": {e}", pd.name))?;
            offsets.push(total);
            total += pack::packed_len(bits, pd.n, pd.k).div_ceil(4096) * 4096;
        }
        let weights_buf = AlignedBuf::zeroed_huge(total)?;
        let mut packed = Vec::with_capacity(plan.packs.len());
        for (pd, &off) in plan.packs.iter().zip(&offsets) {
            let w = store
                .get(&pd.name)
                .ok_or_else(|| format!("weight \"{}\" is not in the weight store", pd.name))?;
            if w.dtype != pd.dtype || w.shape != [pd.n as u64, pd.k as u64] {
                return Err(format!(
                    "weight \"{}\": the store has {}{:?}, the graph wants {}[{}, {}]",
                    pd.name, w.dtype, w.shape, pd.dtype, pd.n, pd.k
                ));
            }
            let bits = pack::check_packable(pd.dtype, pd.n, pd.k)?;
            let groups = pd.n / pack::GROUP;
            let gb = pack::packed_len(bits, pack::GROUP, pd.k);
            let base = weights_buf.ptr() as usize + off;
            let err = std::sync::Mutex::new(None);
            pool.run(groups, 16, &|lo, hi| {
                // SAFETY: chunks are disjoint group ranges of `out`.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut((base + lo * gb) as *mut u8, (hi - lo) * gb)
                };
                if let Err(e) = pack::pack_rows(pd.dtype, w.bytes, pd.n, pd.k, dst, lo..hi) {
                    *err.lock().unwrap() = Some(e);
                }
                if release {
                    // Drop the source rows as soon as they are packed, so the peak RSS
                    // never holds a whole tensor twice.
                    let rb = w.bytes.len() / groups;
                    release_pages(&w.bytes[lo * rb..hi * rb]);
                }
            });
            if let Some(e) = err.into_inner().unwrap() {
                return Err(format!("packing \"{}\": {e}", pd.name));
            }
            if release {
                release_pages(w.bytes);
            }
            packed.push((base, pack::packed_len(bits, pd.n, pd.k)));
        }
        let mut norms = Vec::new();
        for n in &plan.norms {
            let w = store
                .get(n)
                .ok_or_else(|| format!("weight \"{n}\" is not in the weight store"))?;
            let mut v = vec![0f32; w.bytes.len() / 4];
            lpuc_ir::quant::dequantize(DType::F32, w.bytes, &mut v)
                .map_err(|e| format!("weight \"{n}\": {e}"))?;
            norms.push(v);
        }
        for s in &plan.steps {
            if let Step::Embed {
                table,
                dtype,
                vocab,
                out,
                ..
            } = s
            {
                let w = store
                    .get(table)
                    .ok_or_else(|| format!("weight \"{table}\" is not in the weight store"))?;
                let rb = dtype.bytes_for(out.width as u64).unwrap_or(0) as usize;
                if w.dtype != *dtype || w.bytes.len() != rb * vocab {
                    return Err(format!(
                        "embedding table \"{table}\" does not match the graph"
                    ));
                }
            }
        }
        let caches = plan
            .caches
            .iter()
            // Whole 16-key tiles (the K cache's layout; V just gets the same size).
            .map(|c| {
                let bytes = c
                    .kvh
                    .checked_mul(plan.cap.div_ceil(16) * 16)
                    .and_then(|x| x.checked_mul(c.d))
                    .and_then(|x| x.checked_mul(c.elem_bytes))
                    .ok_or_else(|| {
                        format!(
                            "KV cache \"{}\" of {} tokens overflows the address space",
                            c.name, plan.cap
                        )
                    })?;
                AlignedBuf::zeroed(bytes).map_err(|e| format!("KV cache \"{}\": {e}", c.name))
            })
            .collect::<Result<Vec<_>, String>>()?;
        // The activation arena, exactly as the memory plan (`plan-buffers`) sized it, and one
        // cos/sin table per rope kind for the plan's largest call.
        let arena = AlignedBuf::zeroed(plan.arena_bytes.max(64))
            .map_err(|e| format!("activation arena: {e}"))?;
        let ropetabs = plan
            .ropetabs
            .iter()
            .map(|dims| AlignedBuf::zeroed((plan.max_s * dims * 4).max(64)))
            .collect::<Result<Vec<_>, String>>()?;
        // Loading left freed temporaries (GGUF metadata arrays, lowering tables) in the
        // heap's resident pages; hand them back before the long-lived part begins.
        release_free_heap();
        Ok(JitForward {
            name: format!("jit ({} threads)", pool.threads()),
            tier,
            plan,
            addrs,
            _kernels: kernels,
            packed,
            _weights_buf: weights_buf,
            norms,
            store,
            caches,
            arena,
            ropetabs,
            past: 0,
            pool,
            compile,
            profile: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn past(&self) -> usize {
        self.past
    }
    pub fn capacity(&self) -> usize {
        self.plan.cap
    }
    pub fn reset(&mut self) {
        self.past = 0;
    }

    /// Turns per-step-kind timing on (adds a clock read per step).
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0); KINDS.len()]);
    }

    pub fn profile(&self) -> Profile {
        let mut by_kind: Vec<_> = match &self.profile {
            Some(p) => KINDS
                .iter()
                .zip(p)
                .filter(|(_, (_, n))| *n > 0)
                .map(|(k, (t, n))| (*k, *t, *n))
                .collect(),
            None => vec![],
        };
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        Profile { by_kind }
    }

    /// Bytes of packed weights, KV caches (virtual) and arena.
    pub fn memory(&self) -> (usize, usize, usize) {
        (
            self.packed.iter().map(|b| b.1).sum(),
            self.caches.iter().map(|b| b.len()).sum(),
            self.arena.len(),
        )
    }

    /// Runs `tokens` (the new tokens) and returns the logits of the last position; calls
    /// longer than the memory plan's `S` run in chunks of that many tokens.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        if tokens.is_empty() {
            return Err("no new tokens (S = 0)".into());
        }
        if self.past + tokens.len() > self.plan.cap {
            return Err(format!(
                "context full: {} cached + {} new tokens exceed the capacity of {}",
                self.past,
                tokens.len(),
                self.plan.cap
            ));
        }
        for st in &self.plan.steps {
            if let Step::Embed { vocab, .. } = st {
                check_ids(tokens, *vocab)?;
            }
        }
        let mut out = vec![];
        for chunk in tokens.chunks(self.plan.max_s) {
            out = self.forward_chunk(chunk)?;
        }
        Ok(out)
    }

    fn forward_chunk(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        let s = tokens.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        for i in 0..self.plan.steps.len() {
            let t0 = self.profile.is_some().then(Instant::now);
            self.step(i, s, &ids)?;
            if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                let k = KINDS
                    .iter()
                    .position(|k| *k == self.plan.steps[i].kind())
                    .unwrap_or(0);
                p[k].0 += t0.elapsed().as_secs_f64();
                p[k].1 += 1;
            }
        }
        let out = self.plan.output;
        let rows = self.act_rows(out, s);
        let p = self.act_ptr(out) as *const f32;
        // SAFETY: the output buffer holds `rows × width` f32 (the plan sized it for `s`).
        let v = unsafe { std::slice::from_raw_parts(p.add((rows - 1) * out.width), out.width) }
            .to_vec();
        self.past += s;
        Ok(v)
    }

    fn act_ptr(&self, a: Act) -> usize {
        self.arena.ptr() as usize + a.off
    }

    fn buf_ptr(&self, off: usize) -> usize {
        self.arena.ptr() as usize + off
    }

    fn act_rows(&self, a: Act, s: usize) -> usize {
        match a.rows {
            Rows::S => s,
            Rows::One => 1,
        }
    }

    /// Rows below this run on one thread: the hand-off costs more than the work.
    const PAR_ROWS: usize = 4;

    /// Splits `n` items over the pool (or runs them on this thread when `par` is false).
    fn par(&self, n: usize, par: bool, f: &(dyn Fn(usize, usize) + Sync)) {
        if !par || self.pool.threads() == 1 {
            f(0, n);
            return;
        }
        let nt = self.pool.threads();
        // Two chunks per thread: long contiguous weight streams per thread (the GEMV's
        // prefetch runs ahead inside a chunk) and a few claims per section, with one spare
        // chunk each to rebalance a late thread. Measured at 2 threads on SmolLM2 decode:
        // 2 per thread ≈ 296–346 tok/s, 4 ≈ 265–307, 8 ≈ 244–288, 1 ≈ 259–304.
        self.pool.run(n, n.div_ceil(2 * nt), f);
    }

    fn step(&self, i: usize, s: usize, ids: &[i32]) -> Result<(), String> {
        type F5 = extern "C" fn(usize, usize, usize, i64, i64);
        type F6 = extern "C" fn(usize, usize, usize, usize, i64, i64);
        type Fq = extern "C" fn(usize, usize, usize, usize, usize, i64, i64, i64);
        type F9 = extern "C" fn(usize, usize, usize, usize, i64, i64, i64, i64, i64);
        let k = |x: usize| self.addrs[x];
        let p = s > 1;
        match &self.plan.steps[i] {
            Step::Embed {
                kern,
                table,
                dtype,
                out,
                ..
            } => {
                let w = self.store.get(table).ok_or("embedding table vanished")?;
                let o = self.act_ptr(*out);
                match kern {
                    Some(kk) => {
                        let f: extern "C" fn(usize, usize, usize, i64) =
                            unsafe { std::mem::transmute(k(*kk)) };
                        f(
                            w.bytes.as_ptr() as usize,
                            ids.as_ptr() as usize,
                            o,
                            s as i64,
                        );
                    }
                    None => {
                        let d = out.width;
                        let rb = dtype.bytes_for(d as u64).unwrap_or(0) as usize;
                        let dst = unsafe { std::slice::from_raw_parts_mut(o as *mut f32, s * d) };
                        for (r, &id) in ids.iter().enumerate() {
                            let id = id as usize;
                            lpuc_ir::quant::dequantize(
                                *dtype,
                                &w.bytes[id * rb..(id + 1) * rb],
                                &mut dst[r * d..(r + 1) * d],
                            )
                            .map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
            Step::RopeTab { kern, tab } => {
                let f: extern "C" fn(usize, i64, i64) = unsafe { std::mem::transmute(k(*kern)) };
                f(
                    self.ropetabs[*tab].ptr() as usize,
                    s as i64,
                    self.past as i64,
                );
            }
            Step::Quant { kern, x, q, .. } => {
                let f: F6 = unsafe { std::mem::transmute(k(*kern)) };
                let rows = self.act_rows(*x, s);
                let (xp, a, b, c) = (
                    self.act_ptr(*x),
                    self.buf_ptr(q.xq),
                    self.buf_ptr(q.dx),
                    self.buf_ptr(q.sx),
                );
                self.par(rows, rows >= Self::PAR_ROWS, &|lo, hi| {
                    f(xp, a, b, c, lo as i64, hi as i64)
                });
            }
            Step::QMatmul { x, q, mats } => {
                let rows = self.act_rows(*x, s) as i64;
                let (a, b, c) = (self.buf_ptr(q.xq), self.buf_ptr(q.dx), self.buf_ptr(q.sx));
                let total: usize = mats.iter().map(|m| m.groups).sum();
                let run = |lo: usize, hi: usize| {
                    let mut base = 0;
                    for m in mats {
                        let (glo, ghi) = (lo.max(base), hi.min(base + m.groups));
                        if glo < ghi {
                            let f: Fq = unsafe { std::mem::transmute(k(m.kern)) };
                            f(
                                self.packed[m.w].0,
                                a,
                                b,
                                c,
                                self.act_ptr(m.out),
                                rows,
                                (glo - base) as i64,
                                (ghi - base) as i64,
                            );
                        }
                        base += m.groups;
                    }
                };
                self.par(total, true, &run);
            }
            Step::RmsNorm { kern, x, w, y } => {
                let f: F5 = unsafe { std::mem::transmute(k(*kern)) };
                let rows = self.act_rows(*x, s);
                let wp = w.map_or(0, |w| self.norms[w].as_ptr() as usize);
                let (xp, yp) = (self.act_ptr(*x), self.act_ptr(*y));
                self.par(rows, rows >= Self::PAR_ROWS, &|lo, hi| {
                    f(xp, wp, yp, lo as i64, hi as i64)
                });
            }
            Step::Rope { kern, x, y, tab } => {
                let f: extern "C" fn(usize, usize, usize, i64) =
                    unsafe { std::mem::transmute(k(*kern)) };
                f(
                    self.act_ptr(*x),
                    self.act_ptr(*y),
                    self.ropetabs[*tab].ptr() as usize,
                    s as i64,
                );
            }
            Step::KvAppend { kern, src, cache } => {
                let f: extern "C" fn(usize, usize, i64, i64, i64) =
                    unsafe { std::mem::transmute(k(*kern)) };
                f(
                    self.act_ptr(*src),
                    self.caches[*cache].ptr() as usize,
                    s as i64,
                    self.past as i64,
                    self.plan.cap as i64,
                );
            }
            Step::Attention {
                kern,
                q,
                k: kc,
                v,
                o,
                heads,
            } => {
                let f: F9 = unsafe { std::mem::transmute(k(*kern)) };
                let (qp, op) = (self.act_ptr(*q), self.act_ptr(*o));
                let (kp, vp) = (
                    self.caches[*kc].ptr() as usize,
                    self.caches[*v].ptr() as usize,
                );
                let (past, cap) = (self.past as i64, self.plan.cap as i64);
                self.par(heads * s, true, &|lo, hi| {
                    f(qp, kp, vp, op, s as i64, past, lo as i64, hi as i64, cap)
                });
            }
            Step::TakeLast { x, y } => {
                let rows = self.act_rows(*x, s);
                // SAFETY: `x` holds `rows × width` f32 and `y` one row, at disjoint planned
                // offsets (they are live at the same step).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (self.act_ptr(*x) as *const f32).add((rows - 1) * x.width),
                        self.act_ptr(*y) as *mut f32,
                        x.width,
                    );
                }
            }
            Step::SwiGlu { kern, a, b, y } | Step::Add { kern, a, b, y } => {
                let f: F5 = unsafe { std::mem::transmute(k(*kern)) };
                let n = self.act_rows(*a, s) * a.width;
                let (ap, bp, yp) = (self.act_ptr(*a), self.act_ptr(*b), self.act_ptr(*y));
                self.par(n, p, &|lo, hi| f(ap, bp, yp, lo as i64, hi as i64));
            }
        }
        Ok(())
    }
}

const KINDS: [&str; 11] = [
    "embedding",
    "rope_table",
    "quantize",
    "qmatmul",
    "rms_norm",
    "rope",
    "kv_append",
    "attention",
    "swiglu",
    "add",
    "take_last",
];

/// Returns the malloc heap's free pages to the OS (glibc keeps them resident otherwise).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the resident pages of a read-only file mapping (whole pages inside `bytes` only).
fn release_pages(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    unsafe {
        let page = 4096usize;
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

impl crate::generate::Forward for JitForward<'_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        JitForward::forward(self, tokens)
    }
    fn reset(&mut self) {
        JitForward::reset(self)
    }
    fn past(&self) -> u64 {
        JitForward::past(self) as u64
    }
    fn capacity(&self) -> u64 {
        JitForward::capacity(self) as u64
    }
    fn name(&self) -> &'static str {
        match self.tier {
            lpuc_host::Tier::Avx2 => "jit (avx2)",
            lpuc_host::Tier::AvxVnni => "jit (avxvnni)",
            lpuc_host::Tier::Avx512Vnni => "jit (avx512vnni)",
        }
    }
}

/// The default thread count: the machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
