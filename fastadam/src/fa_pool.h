/* fastadam's own small thread pool.

   Why not OpenMP: an OpenMP runtime's idle threads busy-wait, and two runtimes in one
   process (PyTorch ships its own) then fight over the cores. These workers sleep on a
   condition variable between jobs, so they cost nothing while idle.

   fa_pool_run(fn, ctx, n) calls fn(ctx, i, n) for i in 0..n-1: i = 0 on the calling thread,
   the others on workers (started on first use). If another thread is already using the pool,
   the call runs every part on the calling thread instead of waiting. After fork() the child
   starts with no workers and makes new ones when it needs them.

   Portable C: POSIX threads with GCC/Clang atomics (Linux, macOS), or the Win32 API
   (Windows, built with MSVC or MinGW). */
#ifndef FA_POOL_H
#define FA_POOL_H

#include <stdlib.h>

#define FA_POOL_MAX 256
#define FA_CALLER_SPIN 20000   /* pause iterations: a few hundred microseconds at most */

/* The few threading primitives the pool needs: POSIX threads and GCC/Clang atomics, or on
   Windows (MSVC, MinGW) slim reader/writer locks, condition variables and Interlocked
   operations (full barriers, so at least as strong as the release/acquire used on POSIX).
   fa_trylock returns 0 when it took the lock, as pthread_mutex_trylock does. */
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#include <process.h>
#include <stdint.h>
typedef SRWLOCK fa_mutex;
typedef CONDITION_VARIABLE fa_cond;
typedef volatile LONG fa_counter;
#define FA_MUTEX_INIT SRWLOCK_INIT
#define FA_COND_INIT CONDITION_VARIABLE_INIT
#define fa_lock(m) AcquireSRWLockExclusive(m)
#define fa_trylock(m) (TryAcquireSRWLockExclusive(m) ? 0 : 1)
#define fa_unlock(m) ReleaseSRWLockExclusive(m)
#define fa_wait(c, m) SleepConditionVariableSRW((c), (m), INFINITE, 0)
#define fa_signal(c) WakeConditionVariable(c)
#define fa_broadcast(c) WakeAllConditionVariable(c)
#define fa_dec_release(x) InterlockedDecrement(x)
#define fa_load_acquire(x) InterlockedCompareExchange((x), 0, 0)
#else
#if !defined(__GNUC__) && !defined(__clang__)
#error "fa_pool.h needs GCC or Clang (__atomic builtins) outside Windows"
#endif
#include <pthread.h>
typedef pthread_mutex_t fa_mutex;
typedef pthread_cond_t fa_cond;
typedef int fa_counter;
#define FA_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define FA_COND_INIT PTHREAD_COND_INITIALIZER
#define fa_lock(m) pthread_mutex_lock(m)
#define fa_trylock(m) pthread_mutex_trylock(m)
#define fa_unlock(m) pthread_mutex_unlock(m)
#define fa_wait(c, m) pthread_cond_wait((c), (m))
#define fa_signal(c) pthread_cond_signal(c)
#define fa_broadcast(c) pthread_cond_broadcast(c)
#define fa_dec_release(x) __atomic_sub_fetch((x), 1, __ATOMIC_RELEASE)
#define fa_load_acquire(x) __atomic_load_n((x), __ATOMIC_ACQUIRE)
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#include <immintrin.h>
static void fa_pause(void) { _mm_pause(); }
#elif defined(_M_ARM64)
#include <intrin.h>
static void fa_pause(void) { __yield(); }
#elif defined(__aarch64__)
static void fa_pause(void) { __asm__ __volatile__("yield"); }
#else
static void fa_pause(void) { }
#endif

typedef void (*fa_task_fn)(void *ctx, int part, int nparts);

static struct {
    fa_mutex lock;              /* guards everything below */
    fa_cond wake;               /* workers wait here for a new generation */
    fa_cond done;               /* the caller waits here for pending == 0 */
    fa_mutex busy;              /* held by the one thread that is running a job */
    int nworkers;               /* started workers; worker k runs part k + 1 */
    unsigned long generation;
    fa_counter pending;
    fa_task_fn fn;
    void *ctx;
    int nparts;                 /* parts of the job */
    int nthreads;               /* threads taking part: worker k runs part k + 1 < nthreads */
    int quit;
    unsigned long born[FA_POOL_MAX + 1];  /* the generation current when part k started */
} fa_pool = {FA_MUTEX_INIT, FA_COND_INIT, FA_COND_INIT, FA_MUTEX_INIT};

static void fa_pool_work(int part) {
    unsigned long seen;
    fa_lock(&fa_pool.lock);
    /* Not fa_pool.generation: the job that started this worker may already have been
       posted, and the worker must take part in it. */
    seen = fa_pool.born[part];
    for (;;) {
        while (fa_pool.generation == seen && !fa_pool.quit)
            fa_wait(&fa_pool.wake, &fa_pool.lock);
        if (fa_pool.quit) break;
        seen = fa_pool.generation;
        if (part < fa_pool.nthreads) {
            fa_task_fn fn = fa_pool.fn;
            void *ctx = fa_pool.ctx;
            int nparts = fa_pool.nparts;
            fa_unlock(&fa_pool.lock);
            fn(ctx, part, nparts);
            fa_lock(&fa_pool.lock);
            /* release: the caller may be spinning on pending, and must then see our writes */
            if (fa_dec_release(&fa_pool.pending) == 0)
                fa_signal(&fa_pool.done);
        }
    }
    fa_unlock(&fa_pool.lock);
}

#if defined(_WIN32)
static unsigned __stdcall fa_pool_worker(void *arg) {
    fa_pool_work((int)(size_t)arg);
    return 0;
}

/* Start one worker; 0 on success. The pool never joins its workers: drop the handle. */
static int fa_pool_start(int part) {
    uintptr_t h = _beginthreadex(NULL, 0, fa_pool_worker, (void *)(size_t)part, 0, NULL);
    if (h == 0) return -1;
    CloseHandle((HANDLE)h);
    return 0;
}

static void fa_pool_prepare(void) { }   /* no fork() on Windows */
#else
static void *fa_pool_worker(void *arg) {
    fa_pool_work((int)(size_t)arg);
    return NULL;
}

static int fa_pool_start(int part) {
    pthread_t t;
    return pthread_create(&t, NULL, fa_pool_worker, (void *)(size_t)part);
}

static void fa_pool_atfork_child(void) {
    /* Only the forking thread survives: forget the workers, reset the locks. */
    pthread_mutex_init(&fa_pool.lock, NULL);
    pthread_mutex_init(&fa_pool.busy, NULL);
    pthread_cond_init(&fa_pool.wake, NULL);
    pthread_cond_init(&fa_pool.done, NULL);
    fa_pool.nworkers = 0;
    fa_pool.pending = 0;
    fa_pool.quit = 0;
}

static int fa_pool_atfork_registered = 0;

static void fa_pool_prepare(void) {
    if (!fa_pool_atfork_registered) {
        pthread_atfork(NULL, NULL, fa_pool_atfork_child);
        fa_pool_atfork_registered = 1;
    }
}
#endif

/* Start workers until there are want - 1 of them. Called with busy held. */
static int fa_pool_grow(int want) {
    fa_pool_prepare();
    if (want > FA_POOL_MAX) want = FA_POOL_MAX;
    while (fa_pool.nworkers < want - 1) {
        int part = fa_pool.nworkers + 1;
        fa_pool.born[part] = fa_pool.generation;   /* busy is held: no job can be posted */
        if (fa_pool_start(part) != 0)
            break;
        fa_pool.nworkers++;
    }
    return fa_pool.nworkers + 1;
}

static void fa_pool_run(fa_task_fn fn, void *ctx, int nparts) {
    int i;
    if (nparts > 1 && fa_trylock(&fa_pool.busy) == 0) {
        int have = fa_pool_grow(nparts);   /* fewer if a thread could not be started */
        int nthreads = have < nparts ? have : nparts;
        if (nthreads > 1) {
            fa_lock(&fa_pool.lock);
            fa_pool.fn = fn;
            fa_pool.ctx = ctx;
            fa_pool.nparts = nparts;
            fa_pool.nthreads = nthreads;
            fa_pool.pending = nthreads - 1;
            fa_pool.generation++;
            fa_broadcast(&fa_pool.wake);
            fa_unlock(&fa_pool.lock);
            fn(ctx, 0, nparts);
            for (i = nthreads; i < nparts; i++) fn(ctx, i, nparts);  /* parts nobody took */
            /* The caller has nothing else to do until its job is done: spin a little before
               sleeping, which saves a wake-up (~10 us here) when the parts end together.
               Idle workers never spin. */
            for (i = 0; i < FA_CALLER_SPIN; i++) {
                if (fa_load_acquire(&fa_pool.pending) == 0) break;
                fa_pause();
            }
            fa_lock(&fa_pool.lock);
            while (fa_pool.pending > 0) fa_wait(&fa_pool.done, &fa_pool.lock);
            fa_unlock(&fa_pool.lock);
            fa_unlock(&fa_pool.busy);
            return;
        }
        fa_unlock(&fa_pool.busy);
    }
    for (i = 0; i < nparts; i++) fn(ctx, i, nparts);
}

#endif
