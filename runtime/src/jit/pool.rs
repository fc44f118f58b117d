//! A persistent thread pool for many tiny parallel sections.
//!
//! A decode step of a 30-layer model runs ~150 parallel sections of 10–100 µs each, so the
//! hand-off cost matters more than scheduling cleverness. Workers spin on an epoch counter
//! for a short while after each job (the next one is usually microseconds away) and then
//! sleep on a condvar, so an idle pool costs no CPU.
//!
//! Work is handed out in chunks from an atomic counter, and the caller's thread takes
//! chunks too: a worker that the OS has descheduled (this machine's 2 cores are shared
//! with compilers) simply claims nothing, and the section finishes at one-thread speed
//! instead of stalling until the worker runs again. A static split waits for every thread
//! and measured 5–10× slower decode under a load average of 7 on 2 cores.
//!
//! Against rayon (the same two chunks per thread as `into_par_iter` jobs on a dedicated
//! 2-thread `rayon::ThreadPool`, interleaved `lpuc bench -p 512 -n 128 -t 2 -r 2`, 4 rounds,
//! quiet machine): decode tg128 128–302 tok/s here vs 74–89 with rayon (its workers park
//! between the ~150 sections of a token and each wake-up costs more than a section's
//! work); prefill pp512 627–875 vs 697–787. The pool stays.
//!
//! Safety protocol for the borrowed job: a worker announces itself in `active` and then
//! re-checks that the job is still open; the caller closes the job when all chunks are
//! claimed and returns only when `active` is zero. So no worker touches a job after `run`
//! returns.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before sleeping.
const SPIN: Duration = Duration::from_micros(500);

type Job = *const (dyn Fn(usize, usize) + Sync);

struct Shared {
    job: UnsafeCell<Option<Job>>,
    n: AtomicUsize,
    chunk: AtomicUsize,
    next: AtomicUsize,
    epoch: AtomicUsize,
    /// Epoch of the last job closed to newcomers.
    closed: AtomicUsize,
    active: AtomicUsize,
    quit: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

// The job pointer is written only while no worker can read it (see the module docs).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Pool {
    n: usize,
    sh: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `n` threads in total: the caller's thread plus `n − 1` workers.
    pub fn new(n: usize) -> Pool {
        let n = n.max(1);
        let sh = Arc::new(Shared {
            job: UnsafeCell::new(None),
            n: AtomicUsize::new(0),
            chunk: AtomicUsize::new(1),
            next: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let handles = (1..n)
            .map(|tid| {
                let sh = sh.clone();
                std::thread::Builder::new()
                    .name(format!("lpuc-jit-{tid}"))
                    .spawn(move || worker(&sh))
                    .expect("spawning a pool thread")
            })
            .collect();
        Pool { n, sh, handles }
    }

    pub fn threads(&self) -> usize {
        self.n
    }

    /// Runs `f(lo, hi)` over `0..n` in chunks of `chunk` items on all threads; returns
    /// when every item is done.
    pub fn run(&self, n: usize, chunk: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let chunk = chunk.max(1);
        if self.n == 1 || n <= chunk {
            if n > 0 {
                f(0, n);
            }
            return;
        }
        let sh = &*self.sh;
        // SAFETY: `run` does not return while a worker may still use `f` (module docs).
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), Job>(f) };
        unsafe { *sh.job.get() = Some(job) };
        sh.n.store(n, SeqCst);
        sh.chunk.store(chunk, SeqCst);
        sh.next.store(0, SeqCst);
        let e = sh.epoch.fetch_add(1, SeqCst) + 1;
        if sh.sleepers.load(SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.cv.notify_all();
        }
        claim(sh, f);
        sh.closed.store(e, SeqCst);
        let mut spins = 0u32;
        while sh.active.load(SeqCst) != 0 {
            spins += 1;
            if spins < 2_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Claims and runs chunks until none are left.
fn claim(sh: &Shared, f: &(dyn Fn(usize, usize) + Sync)) {
    let (n, chunk) = (sh.n.load(SeqCst), sh.chunk.load(SeqCst));
    loop {
        let lo = sh.next.fetch_add(chunk, SeqCst);
        if lo >= n {
            return;
        }
        f(lo, (lo + chunk).min(n));
    }
}

fn worker(sh: &Shared) {
    let mut seen = 0usize;
    loop {
        let t0 = Instant::now();
        let mut k = 0u32;
        let e = loop {
            if sh.quit.load(Acquire) {
                return;
            }
            let e = sh.epoch.load(SeqCst);
            if e != seen {
                break e;
            }
            k += 1;
            if k % 64 != 0 || t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.sleepers.fetch_add(1, SeqCst);
            while sh.epoch.load(SeqCst) == seen && !sh.quit.load(SeqCst) {
                g = sh.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, SeqCst);
        };
        seen = e;
        sh.active.fetch_add(1, SeqCst);
        if sh.closed.load(SeqCst) < e && sh.epoch.load(SeqCst) == e {
            // SAFETY: the job of epoch `e` is open and its caller waits for `active`.
            let f = unsafe { (*sh.job.get()).expect("job set before the epoch bump") };
            claim(sh, unsafe { &*f });
        }
        sh.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.sh.quit.store(true, SeqCst);
        {
            let _g = self.sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sh.cv.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The half-open share `[lo, hi)` of `n` items for thread `t` of `nt`.
pub fn share(n: usize, t: usize, nt: usize) -> (usize, usize) {
    (n * t / nt, n * (t + 1) / nt)
}
