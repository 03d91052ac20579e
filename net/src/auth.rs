//! Connection authentication: a challenge–response MAC over a cluster secret, in both directions.
//!
//! Every connection between two rthreads nodes (the start-up mesh and the direct connections made
//! later) begins with this exchange, before any other byte is trusted:
//!
//! 1. the accepting side sends `Challenge { server_nonce }` (16 fresh random bytes);
//! 2. the connecting side answers `Response { client_nonce, mac_c }` where
//!    `mac_c = HMAC-SHA256(key, "rthreads/1 client" ‖ server_nonce ‖ client_nonce)`;
//! 3. the accepting side checks `mac_c` in constant time. A wrong MAC is answered with a `Reject`
//!    saying authentication failed, logged by the caller, and the connection is closed: the peer
//!    never sees a page, a hello or an address table. A right one is answered with
//!    `Proof { mac_s }`, `mac_s = HMAC-SHA256(key, "rthreads/1 server" ‖ client_nonce ‖ server_nonce)`;
//! 4. the connecting side checks `mac_s`, so it does not hand its memory to an impostor either.
//!
//! Fresh nonces on both sides make a recorded exchange useless for a later connection. The MAC
//! authenticates the *start* of the connection only; the traffic after it is neither encrypted nor
//! integrity-protected (see "Threat model" in `docs/security.md`).
//!
//! The key is never the secret's text itself: [`Secret::from_text`] hashes the text with a
//! domain label, so a passphrase, a hex string or a file's contents all make a 256-bit key.

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::codec::{Reader, Writer};
use crate::frame::{read_frame, write_frame};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes in a nonce.
pub const NONCE: usize = 16;
/// Bytes in a MAC.
pub const MAC: usize = 32;

const TAG_CHALLENGE: u8 = 0x41;
const TAG_RESPONSE: u8 = 0x42;
const TAG_PROOF: u8 = 0x43;
/// Same tag and layout as the mesh's refusal, so either side reads both the same way.
pub(crate) const TAG_REJECT: u8 = 3;
const MAGIC: u32 = 0x5254_4155; // "RTAU"

/// How long either side waits for the other's next authentication message.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The fewest bytes a secret given by a person (`RTHREADS_SECRET`, a secret file) may have, after
/// surrounding whitespace is trimmed: a shorter one could be found offline by trying every
/// candidate against one recorded handshake.
pub const MIN_SECRET_BYTES: usize = 16;

/// How to make a secret that passes [`Secret::from_setting`], for error messages.
const MAKE_ONE: &str = "make a good one with `rthreads secret` (e.g. `export RTHREADS_SECRET=$(rthreads secret)`, \
     or `rthreads secret --file ~/.rthreads/secret` for a file)";

/// The cluster secret: a 256-bit key every node of one run shares.
///
/// Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the given buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

impl Secret {
    /// A new random secret, from the kernel's random number generator.
    ///
    /// # Errors
    /// If `getrandom(2)` fails.
    pub fn generate() -> io::Result<Secret> {
        let mut k = [0u8; 32];
        random_bytes(&mut k)?;
        Ok(Secret(k))
    }

    /// The key made from a secret's text (surrounding whitespace ignored), whatever its length.
    /// Secrets that people give go through [`Secret::from_setting`] instead, which refuses weak
    /// ones.
    ///
    /// # Errors
    /// An empty text.
    pub fn from_text(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the cluster secret is empty".into());
        }
        let mut h = Sha256::new();
        h.update(b"rthreads cluster secret v1\0");
        h.update(text.as_bytes());
        Ok(Secret(h.finalize().into()))
    }

    /// The key of a secret as a person gives it (the value of `RTHREADS_SECRET`, or a secret
    /// file's contents): 64 hex digits are the key itself (what [`Secret::to_hex`] and
    /// `rthreads secret` write), any other text is hashed with [`Secret::from_text`]. Surrounding
    /// whitespace is ignored.
    ///
    /// # Errors
    /// Fewer than [`MIN_SECRET_BYTES`] bytes are left once whitespace is trimmed (an empty or
    /// blank text included): the message says how to make a good secret.
    pub fn from_setting(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!(
                "the cluster secret is empty or blank; it needs at least {MIN_SECRET_BYTES} bytes: {MAKE_ONE}"
            ));
        }
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret is too short ({} byte{}; a short one can be found offline from one \
                 recorded handshake); it needs at least {MIN_SECRET_BYTES} bytes: {MAKE_ONE}",
                text.len(),
                if text.len() == 1 { "" } else { "s" }
            ));
        }
        Secret::from_hex(text).or_else(|_| Secret::from_text(text))
    }

    /// Reads a secret from a file that only its owner may read or write; its contents are read
    /// as by [`Secret::from_setting`].
    ///
    /// # Errors
    /// The file cannot be read, is not a regular file, is open to the group or to others (its
    /// mode must be `0600` or `0400`), or holds a secret that is empty or too short: the error
    /// says which and how to fix it.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("secret file {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("secret file {}: not a regular file", path.display()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "secret file {} has mode {mode:03o}: others may read it; run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("secret file {}: {e}", path.display()))?;
        Secret::from_setting(&text).map_err(|e| format!("secret file {}: {e}", path.display()))
    }

    /// The key as 64 hex digits: a text that [`Secret::from_hex`] turns back into this secret
    /// (for handing the secret to the nodes a launcher starts).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The inverse of [`Secret::to_hex`].
    ///
    /// # Errors
    /// Anything but 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Secret, String> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("expected 64 hex digits".into());
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Secret(k))
    }

    fn mac(&self, label: &[u8], a: &[u8; NONCE], b: &[u8; NONCE]) -> HmacSha256 {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        m.update(a);
        m.update(b);
        m
    }
}

const CLIENT: &[u8] = b"rthreads/1 client";
const SERVER: &[u8] = b"rthreads/1 server";

/// A fresh nonce.
///
/// # Errors
/// If `getrandom(2)` fails.
pub fn nonce() -> io::Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    random_bytes(&mut n)?;
    Ok(n)
}

/// The accepting side's first frame.
pub fn challenge_frame(server_nonce: &[u8; NONCE]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(TAG_CHALLENGE).u32(MAGIC).raw(server_nonce);
    w.finish()
}

fn reason_of(body: &[u8]) -> Option<String> {
    if body.first() != Some(&TAG_REJECT) {
        return None;
    }
    Some(Reader::new(&body[1..]).str().unwrap_or("(unreadable reason)").to_owned())
}

fn nonce_from(r: &mut Reader<'_>) -> Result<[u8; NONCE], String> {
    let b = r.raw(NONCE).map_err(|e| e.to_string())?;
    Ok(b.try_into().expect("NONCE bytes"))
}

/// What the connecting side answers a challenge with: the response frame, the server's nonce and
/// its own (both needed to check the proof that follows).
pub type Response = (Vec<u8>, [u8; NONCE], [u8; NONCE]);

/// Connecting side: reads the challenge in `body` and makes the response frame.
///
/// # Errors
/// `body` is a refusal (its reason is returned) or not a challenge.
pub fn respond(secret: &Secret, body: &[u8]) -> Result<Response, String> {
    if let Some(reason) = reason_of(body) {
        return Err(format!("refused: {reason}"));
    }
    let mut r = Reader::new(body);
    if r.u8().ok() != Some(TAG_CHALLENGE) || r.u32().ok() != Some(MAGIC) {
        return Err("the peer is not an rthreads node (no authentication challenge)".into());
    }
    let server_nonce = nonce_from(&mut r)?;
    r.end().map_err(|e| format!("bad challenge: {e}"))?;
    let client_nonce = nonce().map_err(|e| format!("random nonce: {e}"))?;
    let mac = secret.mac(CLIENT, &server_nonce, &client_nonce).finalize().into_bytes();
    let mut w = Writer::new();
    w.u8(TAG_RESPONSE).raw(&client_nonce).raw(&mac);
    Ok((w.finish(), server_nonce, client_nonce))
}

/// Why the accepting side refused a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The peer sent something that is not an authentication response (garbage, another
    /// protocol, an old version).
    Malformed(String),
    /// The peer's MAC is wrong: it does not know the cluster secret.
    WrongSecret,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed(e) => write!(f, "not an rthreads authentication response ({e})"),
            AuthError::WrongSecret => f.write_str("authentication failed: wrong cluster secret"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Accepting side: checks the response in `body` to the challenge made with `server_nonce`;
/// on success returns the proof frame to send back.
///
/// # Errors
/// [`AuthError`]: the caller sends [`reject_frame`] and closes the connection.
pub fn verify(secret: &Secret, server_nonce: &[u8; NONCE], body: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut r = Reader::new(body);
    if r.u8().ok() != Some(TAG_RESPONSE) {
        return Err(AuthError::Malformed("unexpected first message".into()));
    }
    let client_nonce = nonce_from(&mut r).map_err(AuthError::Malformed)?;
    let mac = r.raw(MAC).map_err(|e| AuthError::Malformed(e.to_string()))?;
    r.end().map_err(|e| AuthError::Malformed(e.to_string()))?;
    secret.mac(CLIENT, server_nonce, &client_nonce).verify_slice(mac).map_err(|_| AuthError::WrongSecret)?;
    let proof = secret.mac(SERVER, &client_nonce, server_nonce).finalize().into_bytes();
    let mut w = Writer::new();
    w.u8(TAG_PROOF).raw(&proof);
    Ok(w.finish())
}

/// Connecting side: checks the accepting side's proof.
///
/// # Errors
/// A refusal (with its reason), or a proof that does not match: the peer does not know the
/// secret.
pub fn check_proof(
    secret: &Secret,
    server_nonce: &[u8; NONCE],
    client_nonce: &[u8; NONCE],
    body: &[u8],
) -> Result<(), String> {
    if let Some(reason) = reason_of(body) {
        return Err(format!("refused: {reason}"));
    }
    let mut r = Reader::new(body);
    if r.u8().ok() != Some(TAG_PROOF) {
        return Err("no authentication proof from the peer".into());
    }
    let mac = r.raw(MAC).map_err(|e| e.to_string())?;
    r.end().map_err(|e| e.to_string())?;
    secret
        .mac(SERVER, client_nonce, server_nonce)
        .verify_slice(mac)
        .map_err(|_| "the peer failed to prove it knows the cluster secret".into())
}

/// A refusal frame carrying `reason`.
pub fn reject_frame(reason: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(TAG_REJECT).str(reason);
    w.finish()
}

/// Authenticates a freshly connected stream (blocking), connecting side.
///
/// # Errors
/// A socket error, a timeout, a refusal or a bad proof, as text for the caller to report.
pub fn connect_side(stream: &mut TcpStream, secret: &Secret) -> Result<(), String> {
    let old = stream.read_timeout().ok().flatten();
    stream.set_read_timeout(Some(AUTH_TIMEOUT)).map_err(|e| e.to_string())?;
    let body = read_frame(stream, 4096).map_err(|e| format!("no authentication challenge: {e}"))?;
    let (response, sn, cn) = respond(secret, &body)?;
    write_frame(stream, &response).map_err(|e| format!("sending the authentication response: {e}"))?;
    let body = read_frame(stream, 4096).map_err(|e| format!("no authentication proof: {e}"))?;
    check_proof(secret, &sn, &cn, &body)?;
    stream.set_read_timeout(old).map_err(|e| e.to_string())?;
    Ok(())
}

/// Authenticates a freshly accepted stream (blocking), accepting side. On failure the peer has
/// been sent a refusal; the caller logs the error and drops the stream.
///
/// # Errors
/// A socket error, a timeout, garbage, or a wrong secret, as text naming the cause.
pub fn accept_side(stream: &mut TcpStream, secret: &Secret) -> Result<(), String> {
    let old = stream.read_timeout().ok().flatten();
    stream.set_read_timeout(Some(AUTH_TIMEOUT)).map_err(|e| e.to_string())?;
    let sn = nonce().map_err(|e| format!("random nonce: {e}"))?;
    write_frame(stream, &challenge_frame(&sn)).map_err(|e| format!("sending the challenge: {e}"))?;
    let body = read_frame(stream, 4096).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidData {
            format!("not an rthreads peer ({e})")
        } else {
            format!("no authentication response: {e}")
        }
    })?;
    match verify(secret, &sn, &body) {
        Ok(proof) => {
            write_frame(stream, &proof).map_err(|e| format!("sending the proof: {e}"))?;
            stream.set_read_timeout(old).map_err(|e| e.to_string())?;
            Ok(())
        }
        Err(e) => {
            let _ = write_frame(stream, &reject_frame(&e.to_string()));
            // Let the refusal reach the peer before the caller closes the socket.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 256];
            stream.set_read_timeout(Some(Duration::from_millis(50))).ok();
            let _ = stream.read(&mut sink);
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(client: &Secret, server: &Secret) -> (Result<(), String>, Result<(), String>) {
        let sn = nonce().unwrap();
        let (resp, sn2, cn) = respond(client, &challenge_frame(&sn)).unwrap();
        assert_eq!(sn, sn2);
        match verify(server, &sn, &resp) {
            Ok(proof) => (Ok(()), check_proof(client, &sn, &cn, &proof)),
            Err(e) => {
                let r = e.to_string();
                (Err(r), check_proof(client, &sn, &cn, &reject_frame(&e.to_string())))
            }
        }
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let s = Secret::generate().unwrap();
        let (a, b) = exchange(&s, &s.clone());
        assert_eq!(a, Ok(()));
        assert_eq!(b, Ok(()));
    }

    #[test]
    fn wrong_secret_is_refused_and_the_client_learns_why() {
        let (a, b) = exchange(&Secret::from_text("one").unwrap(), &Secret::from_text("two").unwrap());
        assert!(a.unwrap_err().contains("wrong cluster secret"));
        assert!(b.unwrap_err().contains("wrong cluster secret"));
    }

    #[test]
    fn a_server_without_the_secret_cannot_forge_a_proof() {
        let s = Secret::generate().unwrap();
        let sn = nonce().unwrap();
        let (_, _, cn) = respond(&s, &challenge_frame(&sn)).unwrap();
        let mut forged = vec![TAG_PROOF];
        forged.extend_from_slice(&[0u8; MAC]);
        assert!(check_proof(&s, &sn, &cn, &forged).is_err());
        // A proof made for other nonces (a replay) fails too.
        let other = nonce().unwrap();
        let (resp, _, _) = respond(&s, &challenge_frame(&other)).unwrap();
        let proof = verify(&s, &other, &resp).unwrap();
        assert!(check_proof(&s, &sn, &cn, &proof).is_err());
    }

    #[test]
    fn a_replayed_response_fails_against_a_new_challenge() {
        let s = Secret::generate().unwrap();
        let sn = nonce().unwrap();
        let (resp, _, _) = respond(&s, &challenge_frame(&sn)).unwrap();
        assert!(verify(&s, &sn, &resp).is_ok());
        assert_eq!(verify(&s, &nonce().unwrap(), &resp), Err(AuthError::WrongSecret));
    }

    #[test]
    fn garbage_never_panics() {
        let s = Secret::generate().unwrap();
        let sn = nonce().unwrap();
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(verify(&s, &sn, &body).is_err());
            let _ = respond(&s, &body);
            assert!(check_proof(&s, &sn, &sn, &body).is_err());
        }
    }

    #[test]
    fn hex_round_trip_and_text_keys() {
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert!(Secret::from_hex("abc").is_err());
        assert_eq!(Secret::from_text(" pass \n").unwrap(), Secret::from_text("pass").unwrap());
        assert!(Secret::from_text("  ").is_err());
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rthreads-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::from_file(&f).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Secret::from_file(&f).unwrap(),
            Secret::from_text("correct horse battery staple").unwrap()
        );
        // A file holding 64 hex digits (what `rthreads secret --file` writes) gives the same key
        // as the same text in RTHREADS_SECRET.
        let s = Secret::generate().unwrap();
        std::fs::write(&f, format!("{}\n", s.to_hex())).unwrap();
        assert_eq!(Secret::from_file(&f).unwrap(), s);
        // A weak secret in a file is refused as in the environment.
        std::fs::write(&f, "hunter2\n").unwrap();
        let e = Secret::from_file(&f).unwrap_err();
        assert!(e.contains("too short (7 bytes") && e.contains("rthreads secret"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_people_give_must_have_16_bytes() {
        for weak in ["a", "", "   ", "\t\n", "fifteen bytes!!", "  short, spaced  "] {
            let e = Secret::from_setting(weak).unwrap_err();
            assert!(e.contains("at least 16 bytes"), "{weak:?}: {e}");
            assert!(e.contains("export RTHREADS_SECRET=$(rthreads secret)"), "{weak:?}: {e}");
        }
        assert!(Secret::from_setting("").unwrap_err().contains("empty or blank"));
        assert!(Secret::from_setting(" ").unwrap_err().contains("empty or blank"));
        assert!(Secret::from_setting("a").unwrap_err().contains("too short (1 byte;"));
        // Sixteen bytes pass, hashed as text; surrounding whitespace does not count.
        assert_eq!(
            Secret::from_setting(" sixteen bytes!!! \n").unwrap(),
            Secret::from_text("sixteen bytes!!!").unwrap()
        );
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_setting(&s.to_hex()).unwrap(), s);
    }

    #[test]
    fn blocking_exchange_over_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let good = Secret::generate().unwrap();
        let g2 = good.clone();
        let server = std::thread::spawn(move || {
            let mut out = Vec::new();
            for _ in 0..3 {
                let (mut s, _) = l.accept().unwrap();
                out.push(accept_side(&mut s, &g2));
            }
            out
        });
        let mut c = TcpStream::connect(addr).unwrap();
        assert_eq!(connect_side(&mut c, &good), Ok(()));
        let mut c = TcpStream::connect(addr).unwrap();
        let e = connect_side(&mut c, &Secret::from_text("wrong").unwrap()).unwrap_err();
        assert!(e.contains("wrong cluster secret"), "{e}");
        let mut c = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let results = server.join().unwrap();
        assert_eq!(results[0], Ok(()));
        assert!(results[1].as_ref().unwrap_err().contains("wrong cluster secret"));
        assert!(results[2].is_err(), "{:?}", results[2]);
    }
}
