//! Memory stays bounded by the window while one item waits a long time for its retry.
//!
//! This file holds a single test: it counts every heap byte of the process through a global
//! allocator, which other tests running at the same time would disturb.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herdsman::{ItemError, Retry, RunStatus};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A record of 512 bytes, so that anything kept per input item shows.
#[derive(Clone)]
struct Record([u64; 64]);

#[test]
fn a_straggler_waiting_for_its_retry_keeps_memory_bounded_by_the_window() {
    const ITEMS: u64 = 20_000;
    let window = 64;
    let mut stream = herdsman::map((0..ITEMS).map(|i| Record([i; 64])), |r: Record| {
        if r.0[0] == 0 {
            // The straggler: fails, and its retry is due only long after the rest is done.
            Err("first item fails")
        } else {
            Ok(r.0[1])
        }
    })
    .workers(2)
    .window(window)
    .ordered(false)
    .retry(
        Retry::attempts(2)
            .backoff(Duration::from_secs(3600))
            .jitter(false),
    )
    .stream();
    // Warm up (threads, channels, buffers), then measure the peak over the rest of the run.
    for _ in 0..1_000 {
        stream.next().unwrap();
    }
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut seen = 1_000;
    while seen < ITEMS - 1 {
        let o = stream.next().unwrap();
        assert!(o.result.is_ok(), "item {} failed", o.index);
        seen += 1;
    }
    let growth = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    // Only the straggler is left, waiting an hour for its retry: stop the run.
    stream.cancel();
    let rest: Vec<_> = stream.by_ref().collect();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].index, 0);
    assert_eq!(rest[0].result, Err(ItemError::Failed("first item fails")));
    assert_eq!(stream.status(), Some(&RunStatus::Cancelled));
    // 19 000 items of 512 bytes went through; a window of 64 of them is 32 KiB. Anything
    // kept per item (even a slot of it) would be megabytes.
    assert!(
        growth < 1 << 20,
        "memory grew by {growth} bytes while one item waited for its retry"
    );
}
