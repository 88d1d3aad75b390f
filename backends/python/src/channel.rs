//! The two sockets to a stub. Each carries frames: a 4-byte little-endian length, then that many
//! bytes of JSON (nereid_ipc.py is the stub's side).
//!
//! The control socket carries the server's requests that run on the stub's main thread, one at
//! a time (initialize, execute, finalize), each answered in turn. The side socket carries the
//! rest in both directions: requests with an "id" answered by messages with "reply", and
//! one-way messages.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nereid_core::{Error, Result};
use parking_lot::Mutex;
use serde_json::Value;

pub fn write_frame(stream: &mut impl Write, message: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(message)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame)
}

pub fn read_frame(stream: &mut impl Read) -> io::Result<Value> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    let mut body = vec![0u8; u32::from_le_bytes(head) as usize];
    stream.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// The control socket, used by one thread at a time (the stub's lock).
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    pub fn new(stream: UnixStream) -> io::Result<Control> {
        Ok(Control { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends a request and reads its reply; `None` waits as long as the stub lives.
    pub fn exchange(&mut self, message: &Value, timeout: Option<Duration>) -> io::Result<Value> {
        write_frame(&mut self.writer, message)?;
        self.reader.get_ref().set_read_timeout(timeout)?;
        read_frame(&mut self.reader)
    }
}

/// The side socket's sending half and the requests waiting for replies.
pub struct Side {
    writer: Mutex<UnixStream>,
    waiting: Mutex<HashMap<u64, mpsc::Sender<Value>>>,
    ids: AtomicU64,
    closed: AtomicBool,
}

impl Side {
    pub fn new(writer: UnixStream) -> Side {
        Side {
            writer: Mutex::new(writer),
            waiting: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
    }

    /// A one-way message.
    pub fn send(&self, message: &Value) -> Result<()> {
        write_frame(&mut *self.writer.lock(), message).map_err(|e| gone(&e))
    }

    /// Answers the stub's request `id`.
    pub fn reply(&self, id: &Value, mut message: Value) {
        message["reply"] = id.clone();
        // A stub that has gone needs no answer.
        let _ = self.send(&message);
    }

    /// Sends a request and waits for its reply.
    pub fn call(&self, mut message: Value, timeout: Duration) -> Result<Value> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        message["id"] = id.into();
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().insert(id, tx);
        if self.closed.load(Ordering::Acquire) {
            self.waiting.lock().remove(&id);
            return Err(Error::internal("the stub process has exited"));
        }
        let sent = self.send(&message);
        let reply = sent.and_then(|()| {
            rx.recv_timeout(timeout).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => {
                    Error::internal(format!("the stub process did not answer within {}s", timeout.as_secs_f32()))
                }
                mpsc::RecvTimeoutError::Disconnected => Error::internal("the stub process has exited"),
            })
        });
        self.waiting.lock().remove(&id);
        reply
    }

    /// Hands a reply to the call waiting for it (the reader thread).
    pub fn deliver(&self, reply: Value) {
        let id = reply["reply"].as_u64().unwrap_or(0);
        if let Some(tx) = self.waiting.lock().remove(&id) {
            let _ = tx.send(reply);
        }
    }

    /// The stub has gone: calls waiting and to come fail at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waiting.lock().clear();
    }
}

fn gone(e: &io::Error) -> Error {
    Error::internal(format!("the stub process is gone ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_round_trip() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &json!({"op": "execute", "n": [1, 2]})).unwrap();
        assert_eq!(&buffer[..4], &(buffer.len() as u32 - 4).to_le_bytes());
        assert_eq!(read_frame(&mut buffer.as_slice()).unwrap(), json!({"op": "execute", "n": [1, 2]}));
        assert!(read_frame(&mut &buffer[..6]).is_err());
    }

    #[test]
    fn calls_get_their_replies() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let side = std::sync::Arc::new(Side::new(ours.try_clone().unwrap()));
        let echo = std::thread::spawn(move || {
            let mut theirs = theirs;
            let request = read_frame(&mut theirs).unwrap();
            write_frame(&mut theirs, &json!({"reply": request["id"], "ok": request["op"]})).unwrap();
        });
        let reader = {
            let side = side.clone();
            let mut ours = ours;
            std::thread::spawn(move || {
                let reply = read_frame(&mut ours).unwrap();
                side.deliver(reply);
            })
        };
        let reply = side.call(json!({"op": "map"}), Duration::from_secs(5)).unwrap();
        assert_eq!(reply["ok"], "map");
        echo.join().unwrap();
        reader.join().unwrap();
        side.close();
        assert!(side.call(json!({"op": "map"}), Duration::from_secs(5)).is_err());
    }
}
