//! The standard library's own documentation examples for `Mutex`, `RwLock`, `Condvar`,
//! `Barrier`, `Once`, `OnceLock` and `mpsc`, run on a cluster with `rthreads::sync`: each
//! example's body is as in std (Rust 1.95), only its `use` lines changed (`std::sync` becomes
//! `rthreads::sync`, `std::thread` becomes `rthreads`), so its threads run on other nodes. Lines
//! rustdoc hides (`# ...`) are written out; `main` runs the examples one after another.
//!
//! Left out: examples needing unstable features (`lock_value_accessors`, `once_cell_*`,
//! `deadline_api`), `thread::scope` (not in rthreads), deprecated items (`wait_timeout_ms`,
//! `ONCE_INIT`), `OnceState`/`call_once_force`/`Once::wait`/`OnceLock::wait`,
//! `RwLockWriteGuard::downgrade`, the trait-impl examples of `OnceLock` (`PartialEq`, `From`,
//! `Default`), examples built on a `static` used from several threads (a `static` is per node),
//! the `compile_fail` and illustration-only snippets, and the two `no_run` `recv_timeout` /
//! `try_iter` examples whose sleeps assume a thread starts and sends within a few hundred
//! milliseconds (not guaranteed on a loaded machine with threads on other processes).
//!
//! The examples that sleep use [`thread`]: rthreads with std's `sleep` added.
#![allow(unused)]
#![allow(
    clippy::bool_assert_comparison,
    clippy::bool_comparison,
    clippy::unit_arg,
    clippy::manual_range_contains
)]

/// rthreads as the examples' `thread` module, with std's `sleep` (sleeping concerns only the
/// calling thread, so std's is the right one).
mod thread {
    pub use rthreads::*;
    pub use std::thread::sleep;
}

/// The examples, each body as in std; only the `use` lines differ. Not reformatted, so they
/// stay as std lays them out.
#[rustfmt::skip]
mod examples {
    // -----------------------------------------------------------------------------------------
    // Mutex

    pub fn mutex() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;
        use rthreads::sync::mpsc::channel;

        const N: usize = 10;

        // Spawn a few threads to increment a shared variable (non-atomically), and
        // let the main thread know once all increments are done.
        //
        // Here we're using an Arc to share memory among threads, and the data inside
        // the Arc is protected with a mutex.
        let data = Arc::new(Mutex::new(0));

        let (tx, rx) = channel();
        for _ in 0..N {
            let (data, tx) = (Arc::clone(&data), tx.clone());
            thread::spawn(move || {
                // The shared state can only be accessed once the lock is held.
                // Our non-atomic increment is safe because we're the only thread
                // which can access the shared state when the lock is held.
                //
                // We unwrap() the return value to assert that we are not expecting
                // threads to ever fail while holding the lock.
                let mut data = data.lock().unwrap();
                *data += 1;
                if *data == N {
                    tx.send(()).unwrap();
                }
                // the lock is unlocked here when `data` goes out of scope.
            });
        }

        rx.recv().unwrap();
    }

    pub fn mutex_poison_recovery() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;

        let lock = Arc::new(Mutex::new(0_u32));
        let lock2 = Arc::clone(&lock);

        let _ = thread::spawn(move || -> () {
            // This thread will acquire the mutex first, unwrapping the result of
            // `lock` because the lock has not been poisoned.
            let _guard = lock2.lock().unwrap();

            // This panic while holding the lock (`_guard` is in scope) will poison
            // the mutex.
            panic!();
        }).join();

        // The lock is poisoned by this point, but the returned result can be
        // pattern matched on to return the underlying guard on both branches.
        let mut guard = match lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };

        *guard += 1;
    }

    pub fn mutex_unlock_early() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;

        const N: usize = 3;

        let data_mutex = Arc::new(Mutex::new(vec![1, 2, 3, 4]));
        let res_mutex = Arc::new(Mutex::new(0));

        let mut threads = Vec::with_capacity(N);
        (0..N).for_each(|_| {
            let data_mutex_clone = Arc::clone(&data_mutex);
            let res_mutex_clone = Arc::clone(&res_mutex);

            threads.push(thread::spawn(move || {
                // Here we use a block to limit the lifetime of the lock guard.
                let result = {
                    let mut data = data_mutex_clone.lock().unwrap();
                    // This is the result of some important and long-ish work.
                    let result = data.iter().fold(0, |acc, x| acc + x * 2);
                    data.push(result);
                    result
                    // The mutex guard gets dropped here, together with any other values
                    // created in the critical section.
                };
                // The guard created here is a temporary dropped at the end of the statement, i.e.
                // the lock would not remain being held even if the thread did some additional work.
                *res_mutex_clone.lock().unwrap() += result;
            }));
        });

        let mut data = data_mutex.lock().unwrap();
        // This is the result of some important and long-ish work.
        let result = data.iter().fold(0, |acc, x| acc + x * 2);
        data.push(result);
        // We drop the `data` explicitly because it's not necessary anymore and the
        // thread still has work to do. This allows other threads to start working on
        // the data immediately, without waiting for the rest of the unrelated work
        // to be done here.
        //
        // It's even more important here than in the threads because we `.join` the
        // threads after that. If we had not dropped the mutex guard, a thread could
        // be waiting forever for it, causing a deadlock.
        // As in the threads, a block could have been used instead of calling the
        // `drop` function.
        drop(data);
        // Here the mutex guard is not assigned to a variable and so, even if the
        // scope does not end after this line, the mutex is still released: there is
        // no deadlock.
        *res_mutex.lock().unwrap() += result;

        threads.into_iter().for_each(|thread| {
            thread
                .join()
                .expect("The thread creating or execution failed !")
        });

        assert_eq!(*res_mutex.lock().unwrap(), 800);
    }

    pub fn mutex_new() {
        use rthreads::sync::Mutex;

        let mutex = Mutex::new(0);
    }

    pub fn mutex_lock() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;

        let mutex = Arc::new(Mutex::new(0));
        let c_mutex = Arc::clone(&mutex);

        thread::spawn(move || {
            *c_mutex.lock().unwrap() = 10;
        }).join().expect("thread::spawn failed");
        assert_eq!(*mutex.lock().unwrap(), 10);
    }

    pub fn mutex_try_lock() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;

        let mutex = Arc::new(Mutex::new(0));
        let c_mutex = Arc::clone(&mutex);

        thread::spawn(move || {
            let mut lock = c_mutex.try_lock();
            if let Ok(ref mut mutex) = lock {
                **mutex = 10;
            } else {
                println!("try_lock failed");
            }
        }).join().expect("thread::spawn failed");
        assert_eq!(*mutex.lock().unwrap(), 10);
    }

    pub fn mutex_is_poisoned() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;

        let mutex = Arc::new(Mutex::new(0));
        let c_mutex = Arc::clone(&mutex);

        let _ = thread::spawn(move || {
            let _lock = c_mutex.lock().unwrap();
            panic!(); // the mutex gets poisoned
        }).join();
        assert_eq!(mutex.is_poisoned(), true);
    }

    pub fn mutex_clear_poison() {
        use rthreads::sync::{Arc, Mutex};
        use rthreads as thread;

        let mutex = Arc::new(Mutex::new(0));
        let c_mutex = Arc::clone(&mutex);

        let _ = thread::spawn(move || {
            let _lock = c_mutex.lock().unwrap();
            panic!(); // the mutex gets poisoned
        }).join();

        assert_eq!(mutex.is_poisoned(), true);
        let x = mutex.lock().unwrap_or_else(|mut e| {
            **e.get_mut() = 1;
            mutex.clear_poison();
            e.into_inner()
        });
        assert_eq!(mutex.is_poisoned(), false);
        assert_eq!(*x, 1);
    }

    pub fn mutex_into_inner() {
        use rthreads::sync::Mutex;

        let mutex = Mutex::new(0);
        assert_eq!(mutex.into_inner().unwrap(), 0);
    }

    pub fn mutex_get_mut() {
        use rthreads::sync::Mutex;

        let mut mutex = Mutex::new(0);
        *mutex.get_mut().unwrap() = 10;
        assert_eq!(*mutex.lock().unwrap(), 10);
    }

    // -----------------------------------------------------------------------------------------
    // RwLock

    pub fn rwlock() {
        use rthreads::sync::{Arc, RwLock};
        use crate::thread;
        use std::time::Duration;

        let data = Arc::new(RwLock::new(5));

        // Multiple readers can access in parallel.
        for i in 0..3 {
            let lock_clone = Arc::clone(&data);

            thread::spawn(move || {
                let value = lock_clone.read().unwrap();

                println!("Reader {}: Read value {}, now holding lock...", i, *value);

                // Simulating a long read operation
                thread::sleep(Duration::from_secs(1));

                println!("Reader {}: Dropping lock.", i);
                // Read lock unlocked when going out of scope.
            });
        }

        thread::sleep(Duration::from_millis(100));  // Wait for readers to start

        // While all readers can proceed, a call to .write() has to wait for
        let mut writable_data = data.write().unwrap();
        println!("Writer proceeds...");
        *writable_data += 1;
    }

    pub fn rwlock_new() {
        use rthreads::sync::RwLock;

        let lock = RwLock::new(5);
    }

    pub fn rwlock_read() {
        use rthreads::sync::{Arc, RwLock};
        use rthreads as thread;

        let lock = Arc::new(RwLock::new(1));
        let c_lock = Arc::clone(&lock);

        let n = lock.read().unwrap();
        assert_eq!(*n, 1);

        thread::spawn(move || {
            let r = c_lock.read();
            assert!(r.is_ok());
        }).join().unwrap();
    }

    pub fn rwlock_try_read() {
        use rthreads::sync::RwLock;

        let lock = RwLock::new(1);

        match lock.try_read() {
            Ok(n) => assert_eq!(*n, 1),
            Err(_) => unreachable!(),
        };
    }

    pub fn rwlock_write() {
        use rthreads::sync::RwLock;

        let lock = RwLock::new(1);

        let mut n = lock.write().unwrap();
        *n = 2;

        assert!(lock.try_read().is_err());
    }

    pub fn rwlock_try_write() {
        use rthreads::sync::RwLock;

        let lock = RwLock::new(1);

        let n = lock.read().unwrap();
        assert_eq!(*n, 1);

        assert!(lock.try_write().is_err());
    }

    pub fn rwlock_is_poisoned() {
        use rthreads::sync::{Arc, RwLock};
        use rthreads as thread;

        let lock = Arc::new(RwLock::new(0));
        let c_lock = Arc::clone(&lock);

        let _ = thread::spawn(move || {
            let _lock = c_lock.write().unwrap();
            panic!(); // the lock gets poisoned
        }).join();
        assert_eq!(lock.is_poisoned(), true);
    }

    pub fn rwlock_clear_poison() {
        use rthreads::sync::{Arc, RwLock};
        use rthreads as thread;

        let lock = Arc::new(RwLock::new(0));
        let c_lock = Arc::clone(&lock);

        let _ = thread::spawn(move || {
            let _lock = c_lock.write().unwrap();
            panic!(); // the lock gets poisoned
        }).join();

        assert_eq!(lock.is_poisoned(), true);
        let guard = lock.write().unwrap_or_else(|mut e| {
            **e.get_mut() = 1;
            lock.clear_poison();
            e.into_inner()
        });
        assert_eq!(lock.is_poisoned(), false);
        assert_eq!(*guard, 1);
    }

    pub fn rwlock_into_inner() {
        use rthreads::sync::RwLock;

        let lock = RwLock::new(String::new());
        {
            let mut s = lock.write().unwrap();
            *s = "modified".to_owned();
        }
        assert_eq!(lock.into_inner().unwrap(), "modified");
    }

    pub fn rwlock_get_mut() {
        use rthreads::sync::RwLock;

        let mut lock = RwLock::new(0);
        *lock.get_mut().unwrap() = 10;
        assert_eq!(*lock.read().unwrap(), 10);
    }

    // -----------------------------------------------------------------------------------------
    // Condvar

    pub fn condvar() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;

        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        // Inside of our lock, spawn a new thread, and then wait for it to start.
        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut started = lock.lock().unwrap();
            *started = true;
            // We notify the condvar that the value has changed.
            cvar.notify_one();
        });

        // Wait for the thread to start up.
        let (lock, cvar) = &*pair;
        let mut started = lock.lock().unwrap();
        while !*started {
            started = cvar.wait(started).unwrap();
        }
    }

    pub fn condvar_new() {
        use rthreads::sync::Condvar;

        let condvar = Condvar::new();
    }

    pub fn condvar_wait() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;

        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut started = lock.lock().unwrap();
            *started = true;
            // We notify the condvar that the value has changed.
            cvar.notify_one();
        });

        // Wait for the thread to start up.
        let (lock, cvar) = &*pair;
        let mut started = lock.lock().unwrap();
        // As long as the value inside the `Mutex<bool>` is `false`, we wait.
        while !*started {
            started = cvar.wait(started).unwrap();
        }
    }

    pub fn condvar_wait_while() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;

        let pair = Arc::new((Mutex::new(true), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut pending = lock.lock().unwrap();
            *pending = false;
            // We notify the condvar that the value has changed.
            cvar.notify_one();
        });

        // Wait for the thread to start up.
        let (lock, cvar) = &*pair;
        // As long as the value inside the `Mutex<bool>` is `true`, we wait.
        let _guard = cvar.wait_while(lock.lock().unwrap(), |pending| { *pending }).unwrap();
    }

    pub fn condvar_wait_timeout() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;
        use std::time::Duration;

        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut started = lock.lock().unwrap();
            *started = true;
            // We notify the condvar that the value has changed.
            cvar.notify_one();
        });

        // wait for the thread to start up
        let (lock, cvar) = &*pair;
        let mut started = lock.lock().unwrap();
        // as long as the value inside the `Mutex<bool>` is `false`, we wait
        loop {
            let result = cvar.wait_timeout(started, Duration::from_millis(10)).unwrap();
            // 10 milliseconds have passed, or maybe the value changed!
            started = result.0;
            if *started == true {
                // We received the notification and the value has been updated, we can leave.
                break
            }
        }
    }

    pub fn condvar_wait_timeout_while() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;
        use std::time::Duration;

        let pair = Arc::new((Mutex::new(true), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut pending = lock.lock().unwrap();
            *pending = false;
            // We notify the condvar that the value has changed.
            cvar.notify_one();
        });

        // wait for the thread to start up
        let (lock, cvar) = &*pair;
        let result = cvar.wait_timeout_while(
            lock.lock().unwrap(),
            Duration::from_millis(100),
            |&mut pending| pending,
        ).unwrap();
        if result.1.timed_out() {
            // timed-out without the condition ever evaluating to false.
        }
        // access the locked mutex via result.0
    }

    pub fn condvar_notify_one() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;

        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut started = lock.lock().unwrap();
            *started = true;
            // We notify the condvar that the value has changed.
            cvar.notify_one();
        });

        // Wait for the thread to start up.
        let (lock, cvar) = &*pair;
        let mut started = lock.lock().unwrap();
        // As long as the value inside the `Mutex<bool>` is `false`, we wait.
        while !*started {
            started = cvar.wait(started).unwrap();
        }
    }

    pub fn condvar_notify_all() {
        use rthreads::sync::{Arc, Mutex, Condvar};
        use rthreads as thread;

        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let pair2 = Arc::clone(&pair);

        thread::spawn(move || {
            let (lock, cvar) = &*pair2;
            let mut started = lock.lock().unwrap();
            *started = true;
            // We notify the condvar that the value has changed.
            cvar.notify_all();
        });

        // Wait for the thread to start up.
        let (lock, cvar) = &*pair;
        let mut started = lock.lock().unwrap();
        // As long as the value inside the `Mutex<bool>` is `false`, we wait.
        while !*started {
            started = cvar.wait(started).unwrap();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Barrier

    pub fn barrier_new() {
        use rthreads::sync::Barrier;

        let barrier = Barrier::new(10);
    }

    pub fn barrier_wait() {
        use rthreads::sync::Barrier;

        let barrier = Barrier::new(1);
        let barrier_wait_result = barrier.wait();
    }

    pub fn barrier_is_leader() {
        use rthreads::sync::Barrier;

        let barrier = Barrier::new(1);
        let barrier_wait_result = barrier.wait();
        println!("{:?}", barrier_wait_result.is_leader());
    }

    // -----------------------------------------------------------------------------------------
    // Once (their statics are used on node 0 only)

    pub fn once() {
        use rthreads::sync::Once;

        static START: Once = Once::new();

        START.call_once(|| {
            // run initialization here
        });
    }

    pub fn once_is_completed() {
        use rthreads::sync::Once;

        static INIT: Once = Once::new();

        assert_eq!(INIT.is_completed(), false);
        INIT.call_once(|| {
            assert_eq!(INIT.is_completed(), false);
        });
        assert_eq!(INIT.is_completed(), true);
    }

    // -----------------------------------------------------------------------------------------
    // OnceLock

    pub fn once_lock_get_or_init() {
        use rthreads::sync::OnceLock;

        let cell = OnceLock::new();
        let value = cell.get_or_init(|| 92);
        assert_eq!(value, &92);
        let value = cell.get_or_init(|| unreachable!());
        assert_eq!(value, &92);
    }

    pub fn once_lock_into_inner() {
        use rthreads::sync::OnceLock;

        let cell: OnceLock<String> = OnceLock::new();
        assert_eq!(cell.into_inner(), None);

        let cell = OnceLock::new();
        cell.set("hello".to_string()).unwrap();
        assert_eq!(cell.into_inner(), Some("hello".to_string()));
    }

    pub fn once_lock_take() {
        use rthreads::sync::OnceLock;

        let mut cell: OnceLock<String> = OnceLock::new();
        assert_eq!(cell.take(), None);

        let mut cell = OnceLock::new();
        cell.set("hello".to_string()).unwrap();
        assert_eq!(cell.take(), Some("hello".to_string()));
        assert_eq!(cell.get(), None);
    }

    // -----------------------------------------------------------------------------------------
    // mpsc

    pub fn mpsc_streaming() {
        use rthreads as thread;
        use rthreads::sync::mpsc::channel;

        // Create a simple streaming channel
        let (tx, rx) = channel();
        thread::spawn(move || {
            tx.send(10).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), 10);
    }

    pub fn mpsc_shared() {
        use rthreads as thread;
        use rthreads::sync::mpsc::channel;

        // Create a shared channel that can be sent along from many threads
        // where tx is the sending half (tx for transmission), and rx is the receiving
        // half (rx for receiving).
        let (tx, rx) = channel();
        for i in 0..10 {
            let tx = tx.clone();
            thread::spawn(move || {
                tx.send(i).unwrap();
            });
        }

        for _ in 0..10 {
            let j = rx.recv().unwrap();
            assert!(0 <= j && j < 10);
        }
    }

    pub fn mpsc_hung_up() {
        use rthreads::sync::mpsc::channel;

        // The call to recv() will return an error because the channel has already
        // hung up (or been deallocated)
        let (tx, rx) = channel::<i32>();
        drop(tx);
        assert!(rx.recv().is_err());
    }

    pub fn mpsc_sync_channel() {
        use rthreads as thread;
        use rthreads::sync::mpsc::sync_channel;

        let (tx, rx) = sync_channel::<i32>(0);
        thread::spawn(move || {
            // This will wait for the parent thread to start receiving
            tx.send(53).unwrap();
        });
        rx.recv().unwrap();
    }

    pub fn mpsc_unbounded_receiver() {
        use rthreads::sync::mpsc::sync_channel;
        use rthreads as thread;

        let (tx, rx) = sync_channel(3);

        for _ in 0..3 {
            // It would be the same without thread and clone here
            // since there will still be one `tx` left.
            let tx = tx.clone();
            // cloned tx dropped within thread
            thread::spawn(move || tx.send("ok").unwrap());
        }

        // Drop the last sender to stop `rx` waiting for message.
        // The program will not complete if we comment this out.
        // **All** `tx` needs to be dropped for `rx` to have `Err`.
        drop(tx);

        // Unbounded receiver waiting for all senders to complete.
        while let Ok(msg) = rx.recv() {
            println!("{msg}");
        }

        println!("completed");
    }

    pub fn mpsc_channel() {
        use rthreads::sync::mpsc::channel;
        use crate::thread;
        use std::time::Duration;

        let (send, recv) = channel();

        thread::spawn(move || {
            send.send("Hello world!").unwrap();
            thread::sleep(Duration::from_secs(2)); // block for two seconds
            send.send("Delayed for 2 seconds").unwrap();
        });

        println!("{}", recv.recv().unwrap()); // Received immediately
        println!("Waiting...");
        println!("{}", recv.recv().unwrap()); // Received after 2 seconds
    }

    pub fn mpsc_receiver_iter() {
        use rthreads::sync::mpsc::channel;
        use rthreads as thread;

        let (send, recv) = channel();

        thread::spawn(move || {
            send.send(1u8).unwrap();
            send.send(2u8).unwrap();
            send.send(3u8).unwrap();
        });

        for x in recv.iter() {
            println!("Got: {x}");
        }
    }

    pub fn mpsc_receiver_try_iter_sleep() {
        use rthreads::sync::mpsc::channel;
        use crate::thread;
        use std::time::Duration;

        let (sender, receiver) = channel();

        // Nothing is in the buffer yet
        assert!(receiver.try_iter().next().is_none());
        println!("Nothing in the buffer...");

        thread::spawn(move || {
            sender.send(1).unwrap();
            sender.send(2).unwrap();
            sender.send(3).unwrap();
        });

        println!("Going to sleep...");
        thread::sleep(Duration::from_secs(2)); // block for two seconds

        for x in receiver.try_iter() {
            println!("Got: {x}");
        }
    }

    pub fn mpsc_receiver_into_iter() {
        use rthreads::sync::mpsc::channel;
        use rthreads as thread;

        let (send, recv) = channel();

        thread::spawn(move || {
            send.send(1u8).unwrap();
            send.send(2u8).unwrap();
            send.send(3u8).unwrap();
        });

        for x in recv.into_iter() {
            println!("Got: {x}");
        }
    }

    pub fn mpsc_sender() {
        use rthreads::sync::mpsc::channel;
        use rthreads as thread;

        let (sender, receiver) = channel();
        let sender2 = sender.clone();

        // First thread owns sender
        thread::spawn(move || {
            sender.send(1).unwrap();
        });

        // Second thread owns sender2
        thread::spawn(move || {
            sender2.send(2).unwrap();
        });

        let msg = receiver.recv().unwrap();
        let msg2 = receiver.recv().unwrap();

        assert_eq!(3, msg + msg2);
    }

    pub fn mpsc_sync_sender() {
        use rthreads::sync::mpsc::sync_channel;
        use rthreads as thread;

        // Create a sync_channel with buffer size 2
        let (sync_sender, receiver) = sync_channel(2);
        let sync_sender2 = sync_sender.clone();

        // First thread owns sync_sender
        thread::spawn(move || {
            sync_sender.send(1).unwrap();
            sync_sender.send(2).unwrap();
        });

        // Second thread owns sync_sender2
        thread::spawn(move || {
            sync_sender2.send(3).unwrap();
            // thread will now block since the buffer is full
            println!("Thread unblocked!");
        });

        let mut msg;

        msg = receiver.recv().unwrap();
        println!("message {msg} received");

        // "Thread unblocked!" will be printed now

        msg = receiver.recv().unwrap();
        println!("message {msg} received");

        msg = receiver.recv().unwrap();

        println!("message {msg} received");
    }

    pub fn mpsc_channel_fn() {
        use rthreads::sync::mpsc::channel;
        use rthreads as thread;

        let (sender, receiver) = channel();

        // Spawn off an expensive computation
        thread::spawn(move || {
            fn expensive_computation() {}
            sender.send(expensive_computation()).unwrap();
        });

        // Do some useful work for a while

        // Let's see what that answer was
        println!("{:?}", receiver.recv().unwrap());
    }

    pub fn mpsc_sync_channel_fn() {
        use rthreads::sync::mpsc::sync_channel;
        use rthreads as thread;

        let (sender, receiver) = sync_channel(1);

        // this returns immediately
        sender.send(1).unwrap();

        thread::spawn(move || {
            // this will block until the previous message has been received
            sender.send(2).unwrap();
        });

        assert_eq!(receiver.recv().unwrap(), 1);
        assert_eq!(receiver.recv().unwrap(), 2);
    }

    pub fn mpsc_sender_send() {
        use rthreads::sync::mpsc::channel;

        let (tx, rx) = channel();

        // This send is always successful
        tx.send(1).unwrap();

        // This send will fail because the receiver is gone
        drop(rx);
        assert_eq!(tx.send(1).unwrap_err().0, 1);
    }

    pub fn mpsc_sync_sender_send() {
        use rthreads::sync::mpsc::sync_channel;
        use rthreads as thread;

        // Create a rendezvous sync_channel with buffer size 0
        let (sync_sender, receiver) = sync_channel(0);

        thread::spawn(move || {
           println!("sending message...");
           sync_sender.send(1).unwrap();
           // Thread is now blocked until the message is received

           println!("...message received!");
        });

        let msg = receiver.recv().unwrap();
        assert_eq!(1, msg);
    }

    pub fn mpsc_sync_sender_try_send() {
        use rthreads::sync::mpsc::sync_channel;
        use rthreads as thread;

        // Create a sync_channel with buffer size 1
        let (sync_sender, receiver) = sync_channel(1);
        let sync_sender2 = sync_sender.clone();

        // First thread owns sync_sender
        let handle1 = thread::spawn(move || {
            sync_sender.send(1).unwrap();
            sync_sender.send(2).unwrap();
            // Thread blocked
        });

        // Second thread owns sync_sender2
        let handle2 = thread::spawn(move || {
            // This will return an error and send
            // no message if the buffer is full
            let _ = sync_sender2.try_send(3);
        });

        let mut msg;
        msg = receiver.recv().unwrap();
        println!("message {msg} received");

        msg = receiver.recv().unwrap();
        println!("message {msg} received");

        // Third message may have never been sent
        match receiver.try_recv() {
            Ok(msg) => println!("message {msg} received"),
            Err(_) => println!("the third message was never sent"),
        }

        // Wait for threads to complete
        handle1.join().unwrap();
        handle2.join().unwrap();
    }

    pub fn mpsc_receiver_try_recv() {
        use rthreads::sync::mpsc::{Receiver, channel};

        let (_, receiver): (_, Receiver<i32>) = channel();

        assert!(receiver.try_recv().is_err());
    }

    pub fn mpsc_receiver_recv() {
        use rthreads::sync::mpsc;
        use rthreads as thread;

        let (send, recv) = mpsc::channel();
        let handle = thread::spawn(move || {
            send.send(1u8).unwrap();
        });

        handle.join().unwrap();

        assert_eq!(Ok(1), recv.recv());
    }

    pub fn mpsc_receiver_recv_buffering() {
        use rthreads::sync::mpsc;
        use rthreads as thread;
        use rthreads::sync::mpsc::RecvError;

        let (send, recv) = mpsc::channel();
        let handle = thread::spawn(move || {
            send.send(1u8).unwrap();
            send.send(2).unwrap();
            send.send(3).unwrap();
            drop(send);
        });

        // wait for the thread to join so we ensure the sender is dropped
        handle.join().unwrap();

        assert_eq!(Ok(1), recv.recv());
        assert_eq!(Ok(2), recv.recv());
        assert_eq!(Ok(3), recv.recv());
        assert_eq!(Err(RecvError), recv.recv());
    }

    pub fn mpsc_receiver_recv_timeout() {
        use crate::thread;
        use std::time::Duration;
        use rthreads::sync::mpsc;

        let (send, recv) = mpsc::channel();

        thread::spawn(move || {
            thread::sleep(Duration::from_millis(800));
            send.send('a').unwrap();
        });

        assert_eq!(
            recv.recv_timeout(Duration::from_millis(400)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
    }

    pub fn mpsc_receiver_iter_next() {
        use rthreads::sync::mpsc::channel;
        use rthreads as thread;

        let (send, recv) = channel();

        thread::spawn(move || {
            send.send(1).unwrap();
            send.send(2).unwrap();
            send.send(3).unwrap();
        });

        let mut iter = recv.iter();
        assert_eq!(iter.next(), Some(1));
        assert_eq!(iter.next(), Some(2));
        assert_eq!(iter.next(), Some(3));
        assert_eq!(iter.next(), None);
    }
}

/// Every example, in order, with its name.
const EXAMPLES: &[(&str, fn())] = &[
    ("Mutex", examples::mutex),
    ("Mutex (poison recovery)", examples::mutex_poison_recovery),
    ("Mutex (unlock early)", examples::mutex_unlock_early),
    ("Mutex::new", examples::mutex_new),
    ("Mutex::lock", examples::mutex_lock),
    ("Mutex::try_lock", examples::mutex_try_lock),
    ("Mutex::is_poisoned", examples::mutex_is_poisoned),
    ("Mutex::clear_poison", examples::mutex_clear_poison),
    ("Mutex::into_inner", examples::mutex_into_inner),
    ("Mutex::get_mut", examples::mutex_get_mut),
    ("RwLock", examples::rwlock),
    ("RwLock::new", examples::rwlock_new),
    ("RwLock::read", examples::rwlock_read),
    ("RwLock::try_read", examples::rwlock_try_read),
    ("RwLock::write", examples::rwlock_write),
    ("RwLock::try_write", examples::rwlock_try_write),
    ("RwLock::is_poisoned", examples::rwlock_is_poisoned),
    ("RwLock::clear_poison", examples::rwlock_clear_poison),
    ("RwLock::into_inner", examples::rwlock_into_inner),
    ("RwLock::get_mut", examples::rwlock_get_mut),
    ("Condvar", examples::condvar),
    ("Condvar::new", examples::condvar_new),
    ("Condvar::wait", examples::condvar_wait),
    ("Condvar::wait_while", examples::condvar_wait_while),
    ("Condvar::wait_timeout", examples::condvar_wait_timeout),
    ("Condvar::wait_timeout_while", examples::condvar_wait_timeout_while),
    ("Condvar::notify_one", examples::condvar_notify_one),
    ("Condvar::notify_all", examples::condvar_notify_all),
    ("Barrier::new", examples::barrier_new),
    ("Barrier::wait", examples::barrier_wait),
    ("BarrierWaitResult::is_leader", examples::barrier_is_leader),
    ("Once", examples::once),
    ("Once::is_completed", examples::once_is_completed),
    ("OnceLock::get_or_init", examples::once_lock_get_or_init),
    ("OnceLock::into_inner", examples::once_lock_into_inner),
    ("OnceLock::take", examples::once_lock_take),
    ("mpsc (streaming)", examples::mpsc_streaming),
    ("mpsc (shared)", examples::mpsc_shared),
    ("mpsc (hung up)", examples::mpsc_hung_up),
    ("mpsc (sync_channel)", examples::mpsc_sync_channel),
    ("mpsc (unbounded receiver)", examples::mpsc_unbounded_receiver),
    ("mpsc::Receiver", examples::mpsc_channel),
    ("mpsc::Iter", examples::mpsc_receiver_iter),
    ("mpsc::TryIter", examples::mpsc_receiver_try_iter_sleep),
    ("mpsc::IntoIter", examples::mpsc_receiver_into_iter),
    ("mpsc::Sender", examples::mpsc_sender),
    ("mpsc::SyncSender", examples::mpsc_sync_sender),
    ("mpsc::channel", examples::mpsc_channel_fn),
    ("mpsc::sync_channel", examples::mpsc_sync_channel_fn),
    ("mpsc::Sender::send", examples::mpsc_sender_send),
    ("mpsc::SyncSender::send", examples::mpsc_sync_sender_send),
    ("mpsc::SyncSender::try_send", examples::mpsc_sync_sender_try_send),
    ("mpsc::Receiver::try_recv", examples::mpsc_receiver_try_recv),
    ("mpsc::Receiver::recv", examples::mpsc_receiver_recv),
    ("mpsc::Receiver::recv (buffering)", examples::mpsc_receiver_recv_buffering),
    ("mpsc::Receiver::recv_timeout", examples::mpsc_receiver_recv_timeout),
    ("mpsc::Receiver::iter", examples::mpsc_receiver_iter_next),
];

#[rthreads::main]
fn main() {
    // An optional argument runs only the examples whose name contains it.
    let filter = std::env::args().nth(1).unwrap_or_default();
    let start = std::time::Instant::now();
    let mut ran = 0;
    for (name, example) in EXAMPLES {
        if name.contains(filter.as_str()) {
            example();
            println!("example {name} ok");
            ran += 1;
        }
    }
    println!("{ran} std examples ok ({:.1} s)", start.elapsed().as_secs_f64());
}
