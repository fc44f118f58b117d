//! A persistent thread pool for many tiny parallel sections.
//!
//! A decode step of a 30-layer model runs ~150 parallel sections of 10–100 µs each, so the
//! hand-off cost matters more than scheduling cleverness. Workers spin on an epoch counter
//! for a short while after each job (a new job is usually microseconds away) and then sleep
//! on a condvar, so an idle pool costs no CPU. Each job is `f(thread_index)`: the caller
//! splits the work statically, which is what these regular kernels want.
//! (Measured against rayon's `join`/`scope` on this workload: see `bench/README.md`.)

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before sleeping.
const SPIN: Duration = Duration::from_micros(300);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    job: UnsafeCell<Option<Job>>,
    epoch: AtomicUsize,
    done: AtomicUsize,
    quit: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

// The job pointer is written only while no worker reads it (between epochs).
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
            epoch: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
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
                    .spawn(move || worker(&sh, tid))
                    .expect("spawning a pool thread")
            })
            .collect();
        Pool { n, sh, handles }
    }

    pub fn threads(&self) -> usize {
        self.n
    }

    /// Runs `f(0..n)` with `f(0)` on the calling thread; returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.n == 1 {
            f(0);
            return;
        }
        // SAFETY: `run` does not return before every worker has finished `f`, so the
        // erased lifetime never outlives the borrow.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        unsafe { *self.sh.job.get() = Some(job) };
        self.sh.done.store(0, SeqCst);
        self.sh.epoch.fetch_add(1, SeqCst);
        if self.sh.sleepers.load(SeqCst) > 0 {
            let _g = self.sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sh.cv.notify_all();
        }
        f(0);
        let mut spins = 0u32;
        while self.sh.done.load(Acquire) < self.n - 1 {
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(sh: &Shared, tid: usize) {
    let mut seen = 0usize;
    loop {
        let t0 = Instant::now();
        let mut k = 0u32;
        loop {
            if sh.quit.load(Acquire) {
                return;
            }
            let e = sh.epoch.load(Acquire);
            if e != seen {
                seen = e;
                break;
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
        }
        // SAFETY: set before the epoch bump we observed; `run` waits for us.
        let f = unsafe { (*sh.job.get()).expect("job set before the epoch bump") };
        unsafe { (*f)(tid) };
        sh.done.fetch_add(1, Release);
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

/// The half-open share `[lo, hi)` of `n` items for thread `t` of `nt`, in units of `align`.
pub fn share(n: usize, t: usize, nt: usize) -> (usize, usize) {
    let lo = n * t / nt;
    let hi = n * (t + 1) / nt;
    (lo, hi)
}
