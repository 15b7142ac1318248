//! A persistent, spinning worker pool for the many tiny parallel regions of token generation.
//!
//! [`run`]`(n_tasks, &task)` calls `task(0) … task(n_tasks - 1)` on `threads` threads — the
//! calling thread plus `threads − 1` persistent workers, where `threads` is
//! [`rayon::current_num_threads`] at the call site (so the CLI's `-t` and a test's
//! `ThreadPoolBuilder::install` set it) — and returns when all are done.
//!
//! # Why not rayon
//!
//! Token generation of a small model is a chain of ~150–210 matrix-vector products per token,
//! each a few microseconds to a few tens of microseconds of work (SmolLM2-135M's q projection:
//! 19 µs on one thread). A rayon region started from inside the pool costs well under a
//! microsecond of bookkeeping, but rayon puts an idle worker to sleep after a few dozen yield
//! rounds, so between two products the second worker is usually asleep and has to be woken
//! (a futex) and scheduled, often arriving after the work is done. Measured with
//! `kernels/examples/pool_overhead.rs` (2 threads, 2-vCPU Zen 5 VM, quiet moment; median µs
//! per call of a 19 µs job split in two, ideal 9.5): called back to back, rayon 10.1, this
//! pool 9.8; with 20 µs of serial work between calls (as between the matmuls of a token),
//! rayon **25.4** (its second worker is asleep: slower than one thread), this pool **9.8**.
//! An empty region costs 0.05–0.2 µs either way. See docs/PERFORMANCE.md, "Persistent worker
//! pool", for the end-to-end effect.
//!
//! Here the workers **spin** on an epoch counter for a bounded time after their last job
//! ([`spin_time`], 100 µs by default, `GRIST_POOL_SPIN_US` overrides) and only then park on a
//! condition variable, so during generation a new job reaches them in well under a
//! microsecond, while an idle process, or rayon's prompt-processing regions (which do not use
//! this pool), are not slowed by spinning threads for more than that bound. The spin is
//! `std::hint::spin_loop` for the first [`busy_spin_time`] (5 µs), then
//! `std::thread::yield_now` between checks: on a machine with more runnable threads than CPUs
//! (the shared 2-vCPU development VM, a laptop running a browser), a purely spinning worker
//! takes CPU time from the thread that has the work, and generation ran at half of rayon's
//! speed; yielding hands the CPU over and costs about a microsecond of reaction time.
//!
//! # How it works
//!
//! - Dispatch: the caller publishes the job (a type-erased `&dyn Fn(usize)` and the task count)
//!   and opens it by storing a new epoch in the pool's state word; workers spinning on that
//!   word **join** the open job (a CAS incrementing the joined count), then every thread —
//!   the caller included — claims tasks and runs them until none is left. The tasks are cut
//!   into one contiguous segment per thread; each thread works through its own segment from
//!   the front, then takes what is left of the others from their backs (one atomic word per
//!   segment), so each thread mostly runs consecutive tasks (one contiguous stream of weights
//!   in a matrix-vector product) and a late thread's share is still taken over. Results cannot depend on which thread runs a task (each task writes its own
//!   outputs), so they are the same for any thread count and any timing.
//! - Completion: when no task is left the caller **closes** the job (no more joins) and spins
//!   (yielding after a while) until the joined count is zero. The caller never waits for a
//!   worker that has not joined: a worker that is asleep or descheduled (2 vCPUs shared with
//!   other processes) just misses the job, as a rayon worker that steals nothing would.
//!   A first version gave each thread a fixed share (task `i` to thread `i % threads`): on a
//!   loaded machine the caller then waited a whole scheduler time slice for a descheduled
//!   worker, and generation fell from ~176 to ~27 t/s on gemma-3-270m.
//! - Panics in a task are caught on the thread that ran it and re-raised on the caller once
//!   every thread is done with the job (so nothing borrowed by the job outlives the call).
//! - Nested calls (a task calling [`run`]), calls with one thread or one task, and calls
//!   made while another thread is using the same pool run inline on the calling thread.
//! - **Idle-time prefetch** ([`prefetch_while_idle`]): the caller may name byte ranges (the
//!   weights of the next matrix-vector product, per segment) that each waiting worker pulls
//!   into its caches while it has nothing else to do — at the end of a job, when it ran out
//!   of tasks before the caller, and during the caller's serial work between two jobs
//!   (norms, RoPE, attention, activation quantization). Token generation is bound by DRAM
//!   bandwidth, and without this the memory bus idles during that serial work.
//! - One pool per thread count, created on first use and kept for the life of the process
//!   (a global registry), so tests that run the same code on 1, 2, 3, 4 threads each get the
//!   right number of threads.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A task body: called once per task index.
type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// Runs `task(i)` for every `i` in `0..n_tasks` on up to [`rayon::current_num_threads`]
/// threads (the caller and the pool's workers that are ready in time; each thread claims
/// the tasks of its own contiguous segment first, in index order) and returns when all are
/// done.
///
/// Each task runs exactly once. If a task panics, the panic is re-raised here once no thread
/// is running a task of the call any more (the tasks not yet claimed may be skipped after a
/// panic on the caller's thread). A call from inside a
/// task, with one thread or one task, or while another thread is using the pool for the same
/// thread count, runs the tasks in order on the calling thread.
pub fn run(n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    if n_tasks == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads <= 1 || n_tasks == 1 || IN_POOL.get() {
        return run_inline(n_tasks, task);
    }
    let pool = pool_for(threads);
    if pool
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return run_inline(n_tasks, task);
    }
    // Released (busy = false, IN_POOL = false) even if a task panics.
    let _guard = CallerGuard { pool };
    IN_POOL.set(true);
    pool.dispatch(n_tasks, task);
}

/// Runs `task(i, chunk)` for every chunk of `data` cut into runs of `chunk_len` elements (the
/// last may be shorter), like `data.chunks_mut(chunk_len).enumerate()`, with [`run`]: chunk
/// `i` is `data[i * chunk_len ..]`, and each is handed to exactly one task.
///
/// # Panics
/// If `chunk_len` is 0 (as `chunks_mut`), or if a task panics.
pub fn run_chunks_mut<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    task: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(chunk_len > 0, "pool::run_chunks_mut: chunk_len is 0");
    let len = data.len();
    let base = SharedMut(data.as_mut_ptr());
    run(len.div_ceil(chunk_len), &|i| {
        let start = i * chunk_len;
        let n = chunk_len.min(len - start);
        // SAFETY: `start + n <= len`, and [`run`] calls each index once, so the chunks handed
        // out are disjoint parts of `data`, which stays mutably borrowed (by us) until every
        // task has returned.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        task(i, chunk);
    });
}

/// A pointer to the elements of a slice that the tasks of [`run_chunks_mut`] write in
/// disjoint parts.
struct SharedMut<T>(*mut T);

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the wrapper only lets tasks on other threads write disjoint chunks of a `&mut [T]`
// (see `run_chunks_mut`), which is sound for `T: Send`, as for `par_chunks_mut`.
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// How long an idle worker spins on the epoch before parking: `GRIST_POOL_SPIN_US`
/// microseconds if set (0 parks at once), else 100 µs — longer than the gaps between the
/// parallel regions of one token (norms, RoPE, attention: a few to a few tens of µs), far
/// shorter than anything a person would notice as a busy CPU.
pub fn spin_time() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| micros_from_env("GRIST_POOL_SPIN_US", DEFAULT_SPIN_US))
}

/// How long a waiting thread busy-spins (`std::hint::spin_loop`) before it starts calling
/// `std::thread::yield_now` between checks: `GRIST_POOL_BUSY_US` microseconds if set, else
/// 5 µs. Applies to idle workers (within [`spin_time`]) and to the caller
/// waiting for workers. Yielding keeps the reaction time within a microsecond or so on an
/// idle CPU, but hands the CPU over when another thread wants it: on a machine with more
/// runnable threads than CPUs, pure spinning workers stole the CPU from the thread doing the
/// work (SmolLM2 generation fell to half of rayon's speed).
pub fn busy_spin_time() -> Duration {
    static BUSY: OnceLock<Duration> = OnceLock::new();
    *BUSY.get_or_init(|| micros_from_env("GRIST_POOL_BUSY_US", DEFAULT_BUSY_US))
}

/// Default of [`busy_spin_time`], in microseconds.
const DEFAULT_BUSY_US: u64 = 5;

/// `Duration` of the microseconds in environment variable `var`, or `default`.
fn micros_from_env(var: &str, default: u64) -> Duration {
    let us = std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(default);
    Duration::from_micros(us)
}

/// Default of [`spin_time`], in microseconds.
const DEFAULT_SPIN_US: u64 = 100;

/// Spin iterations between two reads of the clock while waiting.
const SPINS_PER_CLOCK_CHECK: u32 = 64;

fn run_inline(n_tasks: usize, task: &Task<'_>) {
    (0..n_tasks).for_each(task);
}

thread_local! {
    /// Whether this thread is a pool worker or is inside [`run`] as the caller: a nested call
    /// runs inline (the other threads are busy with the outer call).
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
    /// The pool this thread used last, with its thread count (saves the registry lock).
    static LAST: Cell<Option<&'static Pool>> = const { Cell::new(None) };
}

/// Restores the caller's state when [`run`] returns or unwinds.
struct CallerGuard {
    pool: &'static Pool,
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        IN_POOL.set(false);
        self.pool.busy.store(false, Ordering::Release);
    }
}

/// Every pool created so far, one per thread count (they live as long as the process).
static REGISTRY: Mutex<Vec<&'static Pool>> = Mutex::new(Vec::new());

/// The pool for `threads` threads, created (with `threads − 1` workers) on first use.
fn pool_for(threads: usize) -> &'static Pool {
    if let Some(p) = LAST.get().filter(|p| p.threads == threads) {
        return p;
    }
    let mut pools = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let pool = match pools.iter().find(|p| p.threads == threads) {
        Some(p) => *p,
        None => {
            let p: &'static Pool = Box::leak(Box::new(Pool::new(threads)));
            for worker in 1..threads {
                std::thread::Builder::new()
                    .name(format!("grist-pool-{threads}-{worker}"))
                    .spawn(move || p.worker_loop(worker))
                    .expect("cannot start a grist-pool worker thread");
            }
            pools.push(p);
            p
        }
    };
    LAST.set(Some(pool));
    pool
}

/// The job being run: the task body (its lifetime erased, see [`Pool::dispatch`]) and the
/// number of tasks.
#[derive(Clone, Copy)]
struct Job {
    task: *const Task<'static>,
    n_tasks: usize,
}

/// A value alone on its (pair of) cache line(s), so threads spinning on it are not disturbed
/// by writes to its neighbours.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Bit of [`Pool::state`] set while the current job accepts workers.
const OPEN: u64 = 1 << 31;
/// Bits of [`Pool::state`] counting the workers that joined the current job.
const JOINED: u64 = OPEN - 1;
/// One step of the epoch, the high half of [`Pool::state`].
const EPOCH_ONE: u64 = 1 << 32;

/// The epoch of a [`Pool::state`] value.
fn epoch_of(state: u64) -> u64 {
    state >> 32
}

/// The state shared by a pool's caller and workers.
struct Pool {
    /// Caller thread plus workers.
    threads: usize,
    /// Set while a caller owns the pool (one job at a time).
    busy: AtomicBool,
    /// `epoch << 32 | OPEN? | joined workers`: the epoch is incremented (and `OPEN` set) once
    /// per job, the workers spin on it; a worker joins an open job by incrementing the count
    /// and leaves by decrementing it; the caller clears `OPEN` when every task is claimed and
    /// waits for the count to drop to zero. (Own cache line: everybody polls it.)
    state: CachePadded<AtomicU64>,
    /// Per thread slot (caller 0, worker `w` slot `w`), the unclaimed tasks of its segment of
    /// the current job, `back << 32 | front` relative to the segment's first task (own
    /// cache lines): see [`Pool::claim_and_run`].
    segments: Box<[CachePadded<AtomicU64>]>,
    /// The current job: written by the caller only while the job is closed and no worker has
    /// joined, read by workers only while they are joined.
    job: UnsafeCell<Job>,
    /// The first panic payload of the current job raised on a worker.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Workers parked (or about to park) on `wake`.
    sleeping: AtomicUsize,
    /// Lock of the parking protocol (see [`Pool::wait_for_job`]).
    park_lock: Mutex<()>,
    /// Signalled by the caller when it starts a job while workers sleep.
    wake: Condvar,
    /// Bumped by [`prefetch_while_idle`] each time it publishes a new `plan`.
    plan_gen: CachePadded<AtomicU64>,
    /// What idle workers pull towards their caches (see [`prefetch_while_idle`]).
    plan: Mutex<PrefetchPlan>,
    /// Bytes this pool's idle workers have prefetched (see [`idle_prefetched_bytes`]).
    prefetched: AtomicU64,
}

/// The tasks of segment `segment` when a job of `n_tasks` tasks runs on `threads` threads:
/// consecutive runs of `⌈n_tasks / threads⌉` tasks (the last ones may be shorter or empty).
/// Thread `s` works through segment `s` first; [`prefetch_while_idle`]'s callers use the
/// same cut to name each worker's share of the next job.
pub fn segment_tasks(n_tasks: usize, threads: usize, segment: usize) -> Range<usize> {
    let per = n_tasks.div_ceil(threads.max(1));
    (segment * per).min(n_tasks)..((segment + 1) * per).min(n_tasks)
}

/// Most byte ranges one [`prefetch_while_idle`] call takes.
pub const MAX_PREFETCH_RANGES: usize = 16;

/// The ranges of one [`prefetch_while_idle`] call: `(segment, address, length)`.
#[derive(Clone, Copy)]
struct PrefetchPlan {
    ranges: [(usize, usize, usize); MAX_PREFETCH_RANGES],
    len: usize,
}

impl PrefetchPlan {
    const EMPTY: PrefetchPlan = PrefetchPlan {
        ranges: [(0, 0, 0); MAX_PREFETCH_RANGES],
        len: 0,
    };
}

/// How far a worker got with the current prefetch plan.
#[derive(Clone, Copy, Default)]
struct PlanCursor {
    /// The plan's generation ([`Pool::plan_gen`]).
    gen: u64,
    /// Bytes of this worker's ranges prefetched so far.
    done: usize,
    /// Whether all of them are.
    finished: bool,
}

/// Bytes a worker prefetches between two checks for a new job (64 cache lines).
const PREFETCH_CHUNK: usize = 4096;

/// Names the bytes the **next** [`run`] will read, per segment, so that waiting workers pull
/// them into their caches before and while they are needed. `ranges` holds up to
/// [`MAX_PREFETCH_RANGES`] `(segment, bytes)` pairs; worker `w` (segment `w` of the next
/// job; segment 0 is the caller's and is ignored) prefetches its own ranges, in order, cache
/// line by cache line, whenever it waits for a job, until it is done or the job after the
/// next has started. A plan cut short by a job starts again after that job.
///
/// Meant for a chain of DRAM-bound products: call it right before running product `P` with
/// the ranges of the product after `P`; a worker that finishes its share of `P` early, and
/// every worker during the caller's serial work after `P`, then streams the next weights
/// instead of spinning. Measured effect in docs/PERFORMANCE.md ("Token generation, round
/// 5"). Off when `GRIST_POOL_PREFETCH=0`.
///
/// Only a hint, with no effect on any result: a prefetch instruction never faults and changes
/// no value, so the ranges may even be freed or unmapped before a worker gets to them.
pub fn prefetch_while_idle(ranges: &[(usize, &[u8])]) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || IN_POOL.get() || !idle_prefetch_enabled() {
        return;
    }
    let pool = pool_for(threads);
    let mut plan = PrefetchPlan::EMPTY;
    for (slot, &(segment, bytes)) in plan.ranges.iter_mut().zip(ranges) {
        *slot = (segment, bytes.as_ptr() as usize, bytes.len());
        plan.len += 1;
    }
    *pool.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    pool.plan_gen.fetch_add(1, Ordering::Release);
}

/// Whether [`prefetch_while_idle`] publishes plans: yes unless `GRIST_POOL_PREFETCH=0`
/// (for A/B measurements).
pub fn idle_prefetch_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GRIST_POOL_PREFETCH").map_or(true, |v| v.trim() != "0"))
}

/// Bytes the pools' idle workers have prefetched since the process started (all pools):
/// `grist bench --profile` reports it per token, as the share of the weights that streamed
/// while the caller did serial work.
pub fn idle_prefetched_bytes() -> u64 {
    let pools = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    pools
        .iter()
        .map(|p| p.prefetched.load(Ordering::Relaxed))
        .sum()
}

// SAFETY: every field but `job` is a synchronisation primitive or immutable. `job` is written
// only by the caller holding `busy`, while the previous job is closed and its joined count
// is zero, so no worker reads it concurrently: a worker reads it only after joining (a CAS on
// `state` that requires the current job to be open) and before leaving. Opening the job
// (a SeqCst store of `state`) publishes the write to the joining worker's Acquire CAS. The
// `*const` task is only dereferenced while joined, and the caller keeps the closure alive
// until every joined worker has left (see `Pool::dispatch`).
unsafe impl Sync for Pool {}
// SAFETY: as above; the pool is shared as `&'static Pool`, never moved between threads.
unsafe impl Send for Pool {}

impl Pool {
    fn new(threads: usize) -> Pool {
        Pool {
            threads,
            busy: AtomicBool::new(false),
            state: CachePadded(AtomicU64::new(0)),
            segments: (0..threads)
                .map(|_| CachePadded(AtomicU64::new(0)))
                .collect(),
            job: UnsafeCell::new(Job {
                task: &|_: usize| {},
                n_tasks: 0,
            }),
            panic: Mutex::new(None),
            sleeping: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
            plan_gen: CachePadded(AtomicU64::new(0)),
            plan: Mutex::new(PrefetchPlan::EMPTY),
            prefetched: AtomicU64::new(0),
        }
    }

    /// Runs one job on all threads; the caller must hold `busy`.
    fn dispatch(&self, n_tasks: usize, task: &Task<'_>) {
        // SAFETY: erasing the closure's lifetime is sound because no worker touches it after
        // this function returns: we return (or unwind) only after closing the job and seeing
        // its joined count at zero, i.e. after every worker that could read it has left.
        let task_static: &Task<'static> = unsafe { std::mem::transmute(task) };
        // SAFETY: we hold `busy`, and the previous job (if any) is closed with no worker
        // joined, so no other thread reads or writes `job` now (see `impl Sync for Pool`).
        unsafe {
            *self.job.get() = Job {
                task: task_static,
                n_tasks,
            }
        };
        // Segment `s` holds the tasks `segment_tasks` gives it; the SeqCst store that opens
        // the job below publishes these.
        assert!(
            n_tasks <= u32::MAX as usize,
            "pool::run: more than 2^32 - 1 tasks"
        );
        for (s, seg) in self.segments.iter().enumerate() {
            let len = segment_tasks(n_tasks, self.threads, s).len();
            seg.store((len as u64) << 32, Ordering::Relaxed);
        }
        let old = self.state.load(Ordering::Relaxed);
        debug_assert_eq!(old & (OPEN | JOINED), 0, "previous job not drained");
        // SeqCst pairs with the workers' SeqCst `sleeping` increment + state load: either a
        // worker sees the new epoch, or we see it sleeping and wake it.
        self.state.store(
            (old & !(OPEN | JOINED)).wrapping_add(EPOCH_ONE) | OPEN,
            Ordering::SeqCst,
        );
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            let _lock = self.park_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        // Take tasks like any worker; a worker that arrives late finds fewer (or none) left.
        let mine = catch_unwind(AssertUnwindSafe(|| self.claim_and_run(task, n_tasks, 0)));
        // Close the job (no worker may join any more), then wait for the joined ones to
        // finish the tasks they claimed, even if a task of ours panicked: they use `task`.
        self.state.fetch_and(!OPEN, Ordering::AcqRel);
        // Usually a few spins: busy-spin (the clock read only after a while), then yield.
        let (mut spins, busy, mut since) = (0u32, busy_spin_time(), None);
        while self.state.load(Ordering::Acquire) & JOINED != 0 {
            spins += 1;
            let spinning = spins < SPINS_PER_CLOCK_CHECK
                || since.get_or_insert_with(Instant::now).elapsed() < busy;
            if spinning {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let theirs = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if let Some(payload) = theirs {
            resume_unwind(payload);
        }
    }

    /// Claims the job's tasks one at a time and runs them, until none is left: first the
    /// tasks of this thread's own segment (`slot`), from its front, then those left in the
    /// other segments, from their backs.
    ///
    /// The matrix-vector products cut their rows into consecutive tasks, so a thread that
    /// works through a contiguous run of tasks reads one contiguous stream of weights and
    /// the prefetchers (hardware and the kernels' software prefetch) keep up; with a single
    /// shared counter the threads took alternate tasks, each task restarted the streams, and
    /// 2 threads were barely faster than 1 on small matrices (SmolLM2-135M's 576×576 Q4_1
    /// projection: 6.7 µs on 2 threads vs 7.4 µs on 1; 4.6 µs with segments). A late or
    /// descheduled thread's segment is still taken over by the others, from its back, so
    /// the owner's run stays contiguous.
    fn claim_and_run(&self, task: &Task<'_>, n_tasks: usize, slot: usize) {
        let threads = self.threads;
        for k in 0..threads {
            let s = (slot + k) % threads;
            let (own, first) = (k == 0, segment_tasks(n_tasks, threads, s).start);
            while let Some(i) = Self::claim(&self.segments[s], own) {
                task(first + i);
            }
        }
    }

    /// Takes one task of a segment (`back << 32 | front`): the front one for its owner, the
    /// back one for another thread; `None` when it is empty.
    fn claim(segment: &AtomicU64, own: bool) -> Option<usize> {
        let mut cur = segment.load(Ordering::Relaxed);
        loop {
            let (front, back) = (cur & 0xFFFF_FFFF, cur >> 32);
            if front >= back {
                return None;
            }
            let (next, i) = if own {
                (cur + 1, front)
            } else {
                (cur - (1 << 32), back - 1)
            };
            match segment.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(i as usize),
                Err(now) => cur = now,
            }
        }
    }

    /// Body of a worker: wait for a new job (spin, then park), join it if it is still open,
    /// claim and run tasks until none is left, leave; forever.
    fn worker_loop(&self, slot: usize) {
        IN_POOL.set(true);
        let mut seen = 0; // the epoch of `Pool::new`
        let mut cursor = PlanCursor::default();
        loop {
            let state = self.wait_for_job(seen, slot, &mut cursor);
            seen = epoch_of(state);
            if !self.join(state) {
                continue; // the caller already finished that job alone
            }
            // SAFETY: we joined the open job: the caller wrote `job` before opening it (our
            // Acquire CAS synchronises with that store) and does not write it again, nor
            // drop the closure, before we leave below.
            let job = unsafe { *self.job.get() };
            // SAFETY: as above, the closure is alive while we are joined.
            let task = unsafe { &*job.task };
            let result = catch_unwind(AssertUnwindSafe(|| {
                self.claim_and_run(task, job.n_tasks, slot)
            }));
            if let Err(payload) = result {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(payload);
            }
            // Leave: Release publishes our tasks' writes to the caller's Acquire load.
            self.state.fetch_sub(1, Ordering::Release);
        }
    }

    /// Joins the job of `state` (increments its joined count) if it is still open and still
    /// the current job; false if the caller closed it first.
    fn join(&self, mut state: u64) -> bool {
        let epoch = epoch_of(state);
        while state & OPEN != 0 && epoch_of(state) == epoch {
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Prefetches the ranges of `plan` that belong to segment `slot`, in order, from byte
    /// `cursor.done` of them on, checking for a job newer than epoch `seen` or a newer plan
    /// every [`PREFETCH_CHUNK`] bytes; records in `cursor` how far it got.
    fn prefetch(&self, plan: &PrefetchPlan, slot: usize, seen: u64, cursor: &mut PlanCursor) {
        let mut skip = cursor.done; // bytes of our ranges already prefetched
        for &(segment, addr, len) in &plan.ranges[..plan.len] {
            if segment != slot {
                continue;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let mut line = (addr + skip) & !63;
            let end = addr.saturating_add(len);
            skip = 0;
            while line < end {
                let chunk_end = line.saturating_add(PREFETCH_CHUNK).min(end);
                let before = line;
                while line < chunk_end {
                    crate::cache::prefetch_line(line);
                    line = line.saturating_add(64);
                }
                let bytes = line.min(end) - before.max(addr);
                cursor.done += bytes;
                self.prefetched.fetch_add(bytes as u64, Ordering::Relaxed);
                if epoch_of(self.state.load(Ordering::Acquire)) != seen
                    || self.plan_gen.load(Ordering::Relaxed) != cursor.gen
                {
                    return; // a new job, or a new plan
                }
            }
        }
        cursor.finished = true;
    }

    /// Waits until the epoch differs from `seen` and returns the state: spins for
    /// [`spin_time`], then parks on `wake`. While spinning, works through this worker's
    /// (`slot`'s) ranges of the current prefetch plan, from where `cursor` says it stopped.
    fn wait_for_job(&self, seen: u64, slot: usize, cursor: &mut PlanCursor) -> u64 {
        let (spin, busy) = (spin_time(), busy_spin_time());
        let start = Instant::now();
        let mut spins = 0u32;
        let mut yielding = false;
        loop {
            let state = self.state.load(Ordering::Acquire);
            if epoch_of(state) != seen {
                return state;
            }
            let gen = self.plan_gen.load(Ordering::Acquire);
            if gen != cursor.gen || !cursor.finished {
                if gen != cursor.gen {
                    *cursor = PlanCursor {
                        gen,
                        done: 0,
                        finished: false,
                    };
                }
                let plan = *self.plan.lock().unwrap_or_else(|e| e.into_inner());
                // Cut short by a new job, the plan is taken up again after that job, where
                // it stopped: the plan for the product after a job is published just before
                // the job starts, and a spinning worker may see it first.
                self.prefetch(&plan, slot, seen, cursor);
                continue;
            }
            spins += 1;
            if yielding || spins.is_multiple_of(SPINS_PER_CLOCK_CHECK) {
                let waited = start.elapsed();
                if waited >= spin {
                    break;
                }
                yielding = waited >= busy;
            }
            if yielding {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Park. The caller stores the new epoch, then reads `sleeping`; we increment
        // `sleeping`, then read the state (all SeqCst): at least one of us sees the other's
        // write. If the caller saw us, it notifies while holding `park_lock`, which we hold
        // from our state check until `wait` releases it, so the notification is not lost.
        let mut lock = self.park_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        let state = loop {
            let state = self.state.load(Ordering::SeqCst);
            if epoch_of(state) != seen {
                break state;
            }
            lock = self.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
        };
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in [1, 2, 3, 4] {
            for n_tasks in [0, 1, 2, 3, 5, 8, 17, 100] {
                with_threads(threads, || {
                    for _ in 0..50 {
                        let counts: Vec<AtomicU32> =
                            (0..n_tasks).map(|_| AtomicU32::new(0)).collect();
                        run(n_tasks, &|i| {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                        });
                        for (i, c) in counts.iter().enumerate() {
                            assert_eq!(c.load(Ordering::Relaxed), 1, "{threads} threads task {i}");
                        }
                    }
                });
            }
        }
    }

    /// Runs `threads` tasks that each wait (up to 10 s) until all have started, so each must
    /// be on its own thread; returns how many ran on a pool worker (not the caller).
    fn rendezvous(threads: usize) -> usize {
        let started = AtomicUsize::new(0);
        let on_workers = AtomicUsize::new(0);
        let caller = std::thread::current().id();
        run(threads, &|_| {
            if std::thread::current().id() != caller {
                on_workers.fetch_add(1, Ordering::Relaxed);
            }
            started.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while started.load(Ordering::SeqCst) < threads && Instant::now() < deadline {
                std::thread::yield_now();
            }
        });
        on_workers.load(Ordering::Relaxed)
    }

    #[test]
    fn workers_take_part_and_results_are_deterministic() {
        // Thread counts no other test uses: a pool busy with another test's call would make
        // this one run inline.
        for threads in [6, 7] {
            with_threads(threads, || {
                assert_eq!(rendezvous(threads), threads - 1);
                let out: Vec<AtomicU64> = (0..100).map(|_| AtomicU64::new(0)).collect();
                for _ in 0..20 {
                    run(out.len(), &|i| {
                        let v = (i as u64).wrapping_mul(0x9e37_79b9);
                        out[i].fetch_add(v, Ordering::Relaxed);
                    });
                }
                for (i, v) in out.iter().enumerate() {
                    assert_eq!(v.load(Ordering::Relaxed), 20 * (i as u64 * 0x9e37_79b9));
                }
            });
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_survives() {
        for threads in [1, 2, 3] {
            with_threads(threads, || {
                for bad in 0..threads + 1 {
                    let done = AtomicU32::new(0);
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        run(threads + 1, &|i| {
                            if i == bad {
                                panic!("task {i} failed");
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        })
                    }));
                    let payload = r.expect_err("the panic must reach the caller");
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_default();
                    assert_eq!(msg, format!("task {bad} failed"));
                    // The pool still works afterwards.
                    let n = AtomicU32::new(0);
                    run(7, &|_| {
                        n.fetch_add(1, Ordering::Relaxed);
                    });
                    assert_eq!(n.load(Ordering::Relaxed), 7);
                }
            });
        }
    }

    #[test]
    fn chunks_are_disjoint_and_complete() {
        for threads in [1, 2, 3] {
            with_threads(threads, || {
                for (len, chunk) in [(0, 3), (1, 3), (10, 3), (12, 4), (100, 7)] {
                    let mut data = vec![0u32; len];
                    run_chunks_mut(&mut data, chunk, &|i, c| {
                        assert!(c.len() <= chunk && !c.is_empty());
                        for (j, v) in c.iter_mut().enumerate() {
                            *v += (i * chunk + j) as u32 + 1;
                        }
                    });
                    let expected: Vec<u32> = (1..=len as u32).collect();
                    assert_eq!(data, expected, "{threads} threads, {len} / {chunk}");
                }
            });
        }
    }

    #[test]
    fn nested_calls_run_inline() {
        for threads in [2, 3] {
            with_threads(threads, || {
                let sum = AtomicU64::new(0);
                run(4, &|i| {
                    run(5, &|j| {
                        sum.fetch_add((i * 10 + j) as u64, Ordering::Relaxed);
                    });
                });
                let expected: u64 = (0..4)
                    .flat_map(|i| (0..5).map(move |j| (i * 10 + j) as u64))
                    .sum();
                assert_eq!(sum.load(Ordering::Relaxed), expected);
            });
        }
    }

    #[test]
    fn concurrent_callers_share_a_pool_safely() {
        // Several OS threads use the 2-thread pool at once: one gets it, the others run
        // inline; every call still runs each task once.
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    with_threads(2, || {
                        for k in 0..200u64 {
                            let sum = AtomicU64::new(0);
                            run(6, &|i| {
                                sum.fetch_add(i as u64 + t + k, Ordering::Relaxed);
                            });
                            assert_eq!(sum.load(Ordering::Relaxed), 15 + 6 * (t + k));
                        }
                    })
                });
            }
        });
    }

    #[test]
    fn workers_park_when_idle_and_wake_for_new_jobs() {
        // A thread count no other test uses (see above).
        with_threads(5, || {
            let n = AtomicU32::new(0);
            run(5, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            let pool = pool_for(5);
            // Idle for much longer than the spin time: the workers park.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pool.sleeping.load(Ordering::SeqCst) < 4 {
                assert!(Instant::now() < deadline, "worker never parked");
                std::thread::sleep(spin_time() + Duration::from_millis(1));
            }
            // A new job wakes them all.
            assert_eq!(rendezvous(5), 4);
            assert_eq!(n.load(Ordering::Relaxed), 5);
        });
    }

    /// A job of `threads` tasks that all take part (so every worker is awake and spinning
    /// right after it).
    fn wake_workers(threads: usize) {
        let sum = AtomicUsize::new(0);
        run(threads * 4, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        let n = threads * 4;
        assert_eq!(sum.into_inner(), n * (n - 1) / 2);
    }

    #[test]
    fn idle_workers_prefetch_their_segment_of_the_plan() {
        if !idle_prefetch_enabled() {
            return; // GRIST_POOL_PREFETCH=0 in the environment
        }
        // Counted on this test's own pool (4 threads; no other test publishes plans there).
        // Worker 2 must prefetch its own range, and no worker the caller's (segment 0).
        // It must be spinning (not parked, not descheduled) when the plan appears; on a
        // loaded 2-CPU machine that may take a few attempts.
        let (weights, decoy) = (vec![1u8; 256 << 10], vec![2u8; 64 << 10]);
        let pool = pool_for(4);
        let got_it = with_threads(4, || {
            (0..200).any(|_| {
                wake_workers(4);
                let before = pool.prefetched.load(Ordering::Relaxed);
                prefetch_while_idle(&[(2, &weights[..]), (0, &decoy[..])]);
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(20) {
                    let done = pool.prefetched.load(Ordering::Relaxed) - before;
                    // (One chunk of the previous attempt's plan may still be counted.)
                    let most = (weights.len() + PREFETCH_CHUNK) as u64;
                    assert!(done <= most, "a worker prefetched another segment's range");
                    if done >= weights.len() as u64 {
                        return true;
                    }
                    std::hint::spin_loop();
                }
                false
            })
        });
        assert!(got_it, "the idle worker never prefetched its 256 KiB range");
    }

    #[test]
    fn a_prefetch_plan_may_outlive_its_memory() {
        if !idle_prefetch_enabled() {
            return; // GRIST_POOL_PREFETCH=0 in the environment
        }
        // A large allocation is its own mapping: freeing it unmaps the pages while the plan
        // still names them, and a worker cut short by the next job resumes the plan after
        // it, on unmapped memory. Prefetches never fault, so workers and jobs carry on
        // (`wake_workers` checks its job's result). Counted on this test's own pool (3
        // threads), until worker 1 was seen prefetching (a few attempts on a loaded machine).
        let pool = pool_for(3);
        let before = pool.prefetched.load(Ordering::Relaxed);
        with_threads(3, || {
            for _ in 0..200 {
                let doomed = vec![7u8; 8 << 20];
                wake_workers(3);
                prefetch_while_idle(&[(1, &doomed[..]), (1, &doomed[4096..])]);
                drop(doomed);
                std::thread::sleep(Duration::from_micros(200));
                wake_workers(3);
                if pool.prefetched.load(Ordering::Relaxed) > before {
                    break;
                }
            }
        });
        assert!(
            pool.prefetched.load(Ordering::Relaxed) > before,
            "no worker ever prefetched"
        );
    }

    #[test]
    fn segments_cut_the_tasks_into_consecutive_runs() {
        for threads in 1..=5 {
            for n_tasks in [0usize, 1, 2, 3, 7, 8, 9, 17, 100] {
                let per = n_tasks.div_ceil(threads);
                let mut next = 0;
                for s in 0..threads {
                    let r = segment_tasks(n_tasks, threads, s);
                    assert_eq!(
                        r.start, next,
                        "{n_tasks} tasks, {threads} threads, segment {s}"
                    );
                    assert!(
                        r.len() == per || r.end == n_tasks,
                        "only the tail may be short"
                    );
                    next = r.end;
                }
                assert_eq!(next, n_tasks, "{n_tasks} tasks on {threads} threads");
            }
        }
    }
}
