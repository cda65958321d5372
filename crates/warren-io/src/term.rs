//! Asking the user on the controlling terminal (`auth-user-pass` without a file).
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

/// Asks for one line on the controlling terminal (`/dev/tty`, so it works with stdin and
/// stdout redirected). With `echo == false` the typed characters are not shown (termios
/// `ECHO` off for the duration of the read, restored afterwards, also on error). The line
/// is returned without its line ending.
pub fn prompt_tty(prompt: &str, echo: bool) -> io::Result<String> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let mut out = tty.try_clone()?;
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    let guard = if echo {
        None
    } else {
        Some(EchoOff::new(&tty)?)
    };
    let mut line = String::new();
    let r = BufReader::new(&tty).read_line(&mut line);
    drop(guard);
    if !echo {
        // The Enter key was not echoed either.
        let _ = out.write_all(b"\n");
    }
    r?;
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}

/// Terminal echo switched off until dropped.
struct EchoOff<'a> {
    tty: &'a File,
    saved: libc::termios,
}

impl<'a> EchoOff<'a> {
    fn new(tty: &'a File) -> io::Result<Self> {
        let fd = tty.as_raw_fd();
        let mut t = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: `fd` is an open descriptor borrowed from `tty` for the call; `t` is valid
        // for writes of one termios.
        if unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: tcgetattr succeeded, so it initialised `t`.
        let saved = unsafe { t.assume_init() };
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL);
        quiet.c_lflag |= libc::ICANON;
        // SAFETY: `fd` is open; `quiet` is an initialised termios that lives across the call.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // SAFETY: the descriptor is still open (borrowed from `self.tty`); `saved` is the
        // initialised termios read by `new`.
        unsafe {
            libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSAFLUSH, &self.saved);
        }
    }
}
