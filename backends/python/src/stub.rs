//! A stub process: the chosen interpreter running `nereid_stub.py` for one model instance (or
//! for auto-complete), with its two sockets, its shared memory and what it has in flight.
//!
//! A stub never outlives the server: it exits when its side socket closes; on Linux the kernel
//! also kills it when the server dies (PR_SET_PDEATHSIG). It runs in a process group of its
//! own, so a terminal's Ctrl-C reaches only the server, which then finalizes it.

use std::collections::HashMap;
use std::io::{self, BufReader, ErrorKind};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use nereid_core::decoupled::ResponseSender;
use nereid_core::tensor::Tensor;
use nereid_core::{Error, Result};
use parking_lot::Mutex;
use serde_json::Value;

use crate::arena::Block;
use crate::channel::{read_frame, Control, Side};
use crate::custom_metrics::StubMetrics;
use crate::model::ModelContext;
use crate::tensors::Transfer;

/// A decoupled request the stub is still answering.
pub struct Inflight {
    pub sender: ResponseSender,
    /// Its inputs: outputs may be parts of them.
    pub inputs: Vec<Tensor>,
    /// Its inputs in shared memory, until its final response.
    pub _blocks: Vec<Block>,
}

pub struct Stub {
    /// The instance's name, in errors and logs.
    pub instance: String,
    pid: u32,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    control: Mutex<Control>,
    pub side: Arc<Side>,
    pub transfer: Transfer,
    pub requests: Mutex<HashMap<u64, Inflight>>,
    /// Cancel flags of the BLS requests the stub has in flight, by request id.
    pub bls: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    pub metrics: Mutex<StubMetrics>,
    pub has_is_ready: AtomicBool,
    alive: AtomicBool,
}

/// Called on the side socket's reader thread for each request or message from the stub.
pub type Serve = fn(&Arc<ModelContext>, &Arc<Stub>, Value);

/// Called once the stub has gone (after what it had in flight was failed).
pub type Exited = Box<dyn FnOnce(&Arc<Stub>) + Send>;

impl Stub {
    /// Starts a stub; `exited` runs once it has gone (after its requests were failed).
    pub fn launch(
        context: &Arc<ModelContext>,
        instance: &str,
        serve: Serve,
        exited: Exited,
    ) -> Result<Arc<Stub>> {
        let failed = |e: io::Error| {
            Error::internal(format!(
                "failed to start the Python stub for '{instance}' with '{}': {e}",
                context.interpreter.program.display()
            ))
        };
        let (control, control_theirs) = UnixStream::pair().map_err(failed)?;
        let (side, side_theirs) = UnixStream::pair().map_err(failed)?;
        let fds = [control_theirs.as_raw_fd(), side_theirs.as_raw_fd()];
        let mut command = Command::new(&context.interpreter.program);
        command.arg("-u").arg(&context.stub_script).arg(fds[0].to_string()).arg(fds[1].to_string());
        if let Some(bin) = &context.interpreter.bin_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)));
            command.env("PATH", joined.map_err(|e| failed(io::Error::other(e)))?);
        }
        command.stdin(Stdio::null()).process_group(0);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for fd in fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                #[cfg(target_os = "linux")]
                {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() as u32 != parent {
                        libc::_exit(1);
                    }
                }
                let _ = parent;
                Ok(())
            });
        }
        let child = spawn(command).map_err(failed)?;
        drop((control_theirs, side_theirs));
        let reader = side.try_clone().map_err(failed)?;
        let side = Arc::new(Side::new(side));
        let stub = Arc::new(Stub {
            instance: instance.to_string(),
            pid: child.id(),
            child: Mutex::new(child),
            status: Mutex::new(None),
            control: Mutex::new(Control::new(control).map_err(failed)?),
            transfer: Transfer::new(side.clone(), context.settings.stub_timeout),
            side,
            requests: Mutex::new(HashMap::new()),
            bls: Mutex::new(HashMap::new()),
            metrics: Mutex::new(StubMetrics::default()),
            has_is_ready: AtomicBool::new(false),
            alive: AtomicBool::new(true),
        });
        let (context, reading) = (context.clone(), stub.clone());
        let started = std::thread::Builder::new()
            .name(format!("{instance}-stub"))
            .spawn(move || read_side(context, reading, BufReader::new(reader), serve, exited));
        if let Err(e) = started {
            stub.kill();
            return Err(failed(e));
        }
        Ok(stub)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// A request to run on the stub's main thread and its reply. Past `timeout` the stub is
    /// killed; an `"error"` in the reply is the caller's to read.
    pub fn request(&self, message: &Value, timeout: Option<Duration>) -> Result<Value> {
        let reply = self.control.lock().exchange(message, timeout);
        reply.map_err(|e| {
            self.alive.store(false, Ordering::Release);
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                self.kill();
                Error::internal(format!(
                    "Stub process '{}' did not answer within {}s and was killed",
                    self.instance,
                    timeout.unwrap_or_default().as_secs_f32()
                ))
            } else {
                self.unhealthy()
            }
        })
    }

    /// Triton's error for a stub that has gone, with how it went.
    pub fn unhealthy(&self) -> Error {
        let how = match self.reap(Duration::from_millis(200)) {
            Some(status) => format!(" ({})", describe_exit(status)),
            None => String::new(),
        };
        Error::internal(format!("Stub process '{}' is not healthy{how}.", self.instance))
    }

    /// Kills the stub and everything it started.
    pub fn kill(&self) {
        // SAFETY: signalling the process group the stub leads.
        unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
    }

    /// Runs the model's `finalize` and waits for the stub to exit (killing it past `timeout`).
    pub fn finalize(&self, timeout: Duration) {
        if self.is_alive() {
            match self.request(&serde_json::json!({"op": "finalize"}), Some(timeout)) {
                Ok(reply) if reply.get("error").is_some() => {
                    log::error!("finalize of '{}' failed: {}", self.instance, reply["error"].as_str().unwrap_or(""))
                }
                Ok(_) => {}
                Err(e) => log::error!("finalize of '{}' failed: {e}", self.instance),
            }
        }
        if self.reap(timeout).is_none() {
            self.kill();
            self.reap(Duration::MAX);
        }
    }

    /// The exit status, waiting up to `patience` for it.
    fn reap(&self, patience: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = *self.status.lock() {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.lock().try_wait() {
                *self.status.lock() = Some(status);
                return Some(status);
            }
            if start.elapsed() >= patience {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The stub has gone: what it was answering fails, what it held is released.
    fn exited(&self) {
        self.alive.store(false, Ordering::Release);
        self.side.close();
        if self.reap(Duration::from_secs(1)).is_none() {
            self.kill();
            self.reap(Duration::MAX);
        }
        let error = self.unhealthy();
        for (_, request) in self.requests.lock().drain() {
            let _ = request.sender.send(Err(error.clone()), Default::default(), true);
        }
        for (_, cancel) in self.bls.lock().drain() {
            cancel.store(true, Ordering::Release);
        }
        *self.metrics.lock() = StubMetrics::default();
    }
}

fn read_side(
    context: Arc<ModelContext>,
    stub: Arc<Stub>,
    mut reader: BufReader<UnixStream>,
    serve: Serve,
    exited: Exited,
) {
    while let Ok(message) = read_frame(&mut reader) {
        if message.get("reply").is_some() {
            stub.side.deliver(message);
        } else {
            serve(&context, &stub, message);
        }
    }
    stub.exited();
    exited(&stub);
}

pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns from one long-lived thread: PR_SET_PDEATHSIG fires when the thread that forked a
/// stub ends, and the thread asking (a model load, a restart) may end long before the server.
fn spawn(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("python-stub-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the stub spawner thread starts");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    let gone = || io::Error::other("the stub spawner thread has stopped");
    spawner.lock().send((command, tx)).map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}
