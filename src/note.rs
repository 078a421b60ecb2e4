//! Notes for the person running wingold, from any layer, without that layer
//! printing: a layer says what the user should know while it works (a retry, a
//! checksum trusted on first use, an image written in place) and the command
//! line, which installed the sink, decides how it reaches the terminal. With no
//! sink (the library used on its own) notes are dropped.

#![deny(unsafe_code)]

use std::sync::OnceLock;

type Sink = Box<dyn Fn(&str) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Where notes go, for the rest of the process; the first call wins.
pub fn set_sink(sink: impl Fn(&str) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

/// One note, one line.
pub fn say(text: impl AsRef<str>) {
    if let Some(sink) = SINK.get() {
        sink(text.as_ref());
    }
}
