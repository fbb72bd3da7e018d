//! The async backend: concurrency, real cancellation of timed-out and stopped futures,
//! stream input, and use from inside a runtime.
#![cfg(feature = "async")]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdsman::{ItemError, Retry, RunStatus, StopToken};

/// Sets its flag when dropped, i.e. when the future holding it is dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn wait_for(flag: &AtomicBool, max: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < max {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    flag.load(Ordering::SeqCst)
}

#[test]
fn item_timeout_drops_the_future() {
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (d2, f2) = (dropped.clone(), finished.clone());
    let start = Instant::now();
    let run = herdsman::map_async(0..3u64, move |x| {
        let guard = DropFlag(d2.clone());
        let fin = f2.clone();
        async move {
            if x == 1 {
                let _g = guard;
                tokio::time::sleep(Duration::from_secs(10)).await;
                fin.store(true, Ordering::SeqCst);
            }
            Ok::<_, ()>(x)
        }
    })
    .item_timeout(Duration::from_millis(100))
    .collect();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(run.failures().len(), 1);
    assert_eq!(run.failures()[0].index, 1);
    assert_eq!(run.failures()[0].error, ItemError::TimedOut);
    assert!(
        wait_for(&dropped, Duration::from_secs(2)),
        "future not dropped"
    );
    assert!(!finished.load(Ordering::SeqCst));
}

#[test]
fn stop_cancels_in_flight_futures() {
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let (d2, s2) = (drops.clone(), started.clone());
    let token = StopToken::new();
    let t2 = token.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        t2.stop();
    });
    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let start = Instant::now();
    let run = herdsman::map_async(0u64.., move |x| {
        let c = Count(d2.clone());
        let s = s2.clone();
        async move {
            let _c = c;
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, ()>(x)
        }
    })
    .concurrency(5)
    .stop_token(token)
    .collect();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(run.status(), &RunStatus::Cancelled);
    assert_eq!(run.summary().not_run, 5);
    assert_eq!(run.success_count(), 0);
    let t = Instant::now();
    while drops.load(Ordering::SeqCst) < 5 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        5,
        "every in-flight future dropped"
    );
    assert_eq!(started.load(Ordering::SeqCst), 5);
}

#[test]
fn concurrency_is_respected_and_reached() {
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (n2, m2) = (now.clone(), max.clone());
    let run = herdsman::map_async(0..60u32, move |x| {
        let (n, m) = (n2.clone(), m2.clone());
        async move {
            let k = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(k, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(x)
        }
    })
    .concurrency(8)
    .collect();
    assert_eq!(run.into_values().unwrap(), (0..60).collect::<Vec<u32>>());
    let m = max.load(Ordering::SeqCst);
    assert!((2..=8).contains(&m), "max concurrency {m}");
}

#[test]
fn async_retries_and_panics() {
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let run = herdsman::map_async(0..3u32, move |x| {
        let c = c2.clone();
        async move {
            if x == 2 {
                panic!("async boom");
            }
            if x == 1 && c.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("again");
            }
            Ok(x)
        }
    })
    .retry(Retry::attempts(2).backoff(Duration::from_millis(5)))
    .collect();
    let f = run.failures();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].error, ItemError::Panicked("async boom".into()));
    assert_eq!(run.success_count(), 2);
    assert_eq!(run.summary().retries, 1);
}

#[test]
fn endless_stream_input_stops_on_max_errors() {
    let items = futures::stream::iter(0u64..);
    let run = herdsman::map_async_stream(items, |x| async move {
        if x % 3 == 0 {
            Err(x)
        } else {
            Ok(x)
        }
    })
    .concurrency(4)
    .max_errors(2)
    .collect();
    assert_eq!(run.status(), &RunStatus::Aborted);
    let s = run.summary();
    assert_eq!(s.succeeded + s.failed + s.not_run, s.admitted);
}

#[test]
fn collect_async_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let values = rt.block_on(async {
        herdsman::map_async(0..50u64, |x| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, ()>(x * x)
        })
        .concurrency(16)
        .collect_async()
        .await
        .into_values()
        .unwrap()
    });
    assert_eq!(values[7], 49);
    assert_eq!(values.len(), 50);
}

#[test]
fn deadline_times_out_in_flight_futures() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d2 = dropped.clone();
    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let run = herdsman::map_async(0..10u64, move |x| {
        let c = Count(d2.clone());
        async move {
            let _c = c;
            if x >= 3 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok::<_, ()>(x)
        }
    })
    .concurrency(4)
    .deadline(Duration::from_millis(200))
    .collect();
    assert_eq!(run.status(), &RunStatus::TimedOut);
    assert_eq!(run.success_count(), 3);
    let timed_out: Vec<u64> = run
        .failures()
        .iter()
        .filter(|f| f.error == ItemError::TimedOut)
        .map(|f| f.index)
        .collect();
    assert_eq!(timed_out, vec![3, 4, 5, 6]);
    let t = Instant::now();
    while dropped.load(Ordering::SeqCst) < 7 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        7,
        "every started future dropped"
    );
}
