/* fastadam's own small thread pool.

   Why not OpenMP: an OpenMP runtime's idle threads busy-wait, and two runtimes in one
   process (PyTorch ships its own) then fight over the cores. These workers sleep on a
   condition variable between jobs, so they cost nothing while idle.

   fa_pool_run(fn, ctx, n) calls fn(ctx, i, n) for i in 0..n-1: i = 0 on the calling thread,
   the others on workers (started on first use). If another thread is already using the pool,
   the call runs every part on the calling thread instead of waiting. After fork() the child
   starts with no workers and makes new ones when it needs them. */
#ifndef FA_POOL_H
#define FA_POOL_H

#include <pthread.h>
#include <stdlib.h>

#define FA_POOL_MAX 256
#define FA_CALLER_SPIN 20000   /* pause iterations: a few hundred microseconds at most */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void fa_pause(void) { _mm_pause(); }
#elif defined(__aarch64__)
static inline void fa_pause(void) { __asm__ __volatile__("yield"); }
#else
static inline void fa_pause(void) { }
#endif

typedef void (*fa_task_fn)(void *ctx, int part, int nparts);

static struct {
    pthread_mutex_t lock;       /* guards everything below */
    pthread_cond_t wake;        /* workers wait here for a new generation */
    pthread_cond_t done;        /* the caller waits here for pending == 0 */
    pthread_mutex_t busy;       /* held by the one thread that is running a job */
    int nworkers;               /* started workers; worker k runs part k + 1 */
    unsigned long generation;
    int pending;
    fa_task_fn fn;
    void *ctx;
    int nparts;                 /* parts of the job */
    int nthreads;               /* threads taking part: worker k runs part k + 1 < nthreads */
    int quit;
    pthread_t threads[FA_POOL_MAX];
    unsigned long born[FA_POOL_MAX + 1];  /* the generation current when part k started */
} fa_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
             PTHREAD_MUTEX_INITIALIZER};

static void *fa_pool_worker(void *arg) {
    int part = (int)(size_t)arg;
    unsigned long seen;
    pthread_mutex_lock(&fa_pool.lock);
    /* Not fa_pool.generation: the job that started this worker may already have been
       posted, and the worker must take part in it. */
    seen = fa_pool.born[part];
    for (;;) {
        while (fa_pool.generation == seen && !fa_pool.quit)
            pthread_cond_wait(&fa_pool.wake, &fa_pool.lock);
        if (fa_pool.quit) break;
        seen = fa_pool.generation;
        if (part < fa_pool.nthreads) {
            fa_task_fn fn = fa_pool.fn;
            void *ctx = fa_pool.ctx;
            int nparts = fa_pool.nparts;
            pthread_mutex_unlock(&fa_pool.lock);
            fn(ctx, part, nparts);
            pthread_mutex_lock(&fa_pool.lock);
            /* release: the caller may be spinning on pending, and must then see our writes */
            if (__atomic_sub_fetch(&fa_pool.pending, 1, __ATOMIC_RELEASE) == 0)
                pthread_cond_signal(&fa_pool.done);
        }
    }
    pthread_mutex_unlock(&fa_pool.lock);
    return NULL;
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

/* Start workers until there are want - 1 of them. Called with busy held. */
static int fa_pool_grow(int want) {
    if (!fa_pool_atfork_registered) {
        pthread_atfork(NULL, NULL, fa_pool_atfork_child);
        fa_pool_atfork_registered = 1;
    }
    if (want > FA_POOL_MAX) want = FA_POOL_MAX;
    while (fa_pool.nworkers < want - 1) {
        int part = fa_pool.nworkers + 1;
        fa_pool.born[part] = fa_pool.generation;   /* busy is held: no job can be posted */
        if (pthread_create(&fa_pool.threads[fa_pool.nworkers], NULL, fa_pool_worker,
                           (void *)(size_t)part) != 0)
            break;
        fa_pool.nworkers++;
    }
    return fa_pool.nworkers + 1;
}

static void fa_pool_run(fa_task_fn fn, void *ctx, int nparts) {
    int i;
    if (nparts > 1 && pthread_mutex_trylock(&fa_pool.busy) == 0) {
        int have = fa_pool_grow(nparts);   /* fewer if a thread could not be started */
        int nthreads = have < nparts ? have : nparts;
        if (nthreads > 1) {
            pthread_mutex_lock(&fa_pool.lock);
            fa_pool.fn = fn;
            fa_pool.ctx = ctx;
            fa_pool.nparts = nparts;
            fa_pool.nthreads = nthreads;
            fa_pool.pending = nthreads - 1;
            fa_pool.generation++;
            pthread_cond_broadcast(&fa_pool.wake);
            pthread_mutex_unlock(&fa_pool.lock);
            fn(ctx, 0, nparts);
            for (i = nthreads; i < nparts; i++) fn(ctx, i, nparts);  /* parts nobody took */
            /* The caller has nothing else to do until its job is done: spin a little before
               sleeping, which saves a wake-up (~10 us here) when the parts end together.
               Idle workers never spin. */
            for (i = 0; i < FA_CALLER_SPIN; i++) {
                if (__atomic_load_n(&fa_pool.pending, __ATOMIC_ACQUIRE) == 0) break;
                fa_pause();
            }
            pthread_mutex_lock(&fa_pool.lock);
            while (fa_pool.pending > 0) pthread_cond_wait(&fa_pool.done, &fa_pool.lock);
            pthread_mutex_unlock(&fa_pool.lock);
            pthread_mutex_unlock(&fa_pool.busy);
            return;
        }
        pthread_mutex_unlock(&fa_pool.busy);
    }
    for (i = 0; i < nparts; i++) fn(ctx, i, nparts);
}

#endif
