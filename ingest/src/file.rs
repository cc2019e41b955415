//! JSON Lines file source: the file is read as it is consumed, one chunk of
//! lines at a time, so memory does not grow with the file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use switchyard_schemas::RawRecord;

use crate::{Error, Result};

/// A bounded source over the lines of a JSON Lines file. Records get the
/// file name as topic, partition 0 and the line number (from 0) as offset.
pub struct FileSource {
    reader: BufReader<std::fs::File>,
    path: PathBuf,
    topic: String,
    next_offset: i64,
    chunk_size: usize,
    done: bool,
}

impl FileSource {
    /// Opens `path`. Every line is a record, empty ones too (they go to the
    /// DLQ as empty payloads: nothing in the input is silently dropped); only
    /// the newline ending the file does not start a record.
    pub fn open(path: &Path, chunk_size: usize) -> Result<Self> {
        let file =
            std::fs::File::open(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        let topic = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            topic,
            next_offset: 0,
            chunk_size: chunk_size.max(1),
            done: false,
        })
    }

    /// The next chunk of up to `chunk_size` lines, `None` at the end of the
    /// file, or the read error (naming the file and line). Records are
    /// stamped with the time they are handed out.
    pub fn next_chunk(&mut self) -> Option<Result<Vec<RawRecord>>> {
        if self.done {
            return None;
        }
        let now = chrono::Utc::now().timestamp_micros();
        let mut chunk = Vec::with_capacity(self.chunk_size.min(4096));
        while chunk.len() < self.chunk_size {
            let mut line = Vec::new();
            let read = self.reader.read_until(b'\n', &mut line).map_err(|source| Error::Io {
                path: format!("{} (line {})", self.path.display(), self.next_offset + 1),
                source,
            });
            match read {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                // A file of a single newline holds no record (that newline
                // ends the file).
                if self.next_offset == 0 && line.is_empty() && self.reader.fill_buf().is_ok_and(|b| b.is_empty()) {
                    self.done = true;
                    break;
                }
            }
            chunk.push(RawRecord {
                topic: self.topic.clone(),
                partition: 0,
                offset: self.next_offset,
                payload: Some(line),
                received_us: now,
                ..RawRecord::default()
            });
            self.next_offset += 1;
        }
        (!chunk.is_empty()).then_some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_lines_and_keeps_line_numbers() {
        let dir = std::env::temp_dir().join(format!("sy-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("in.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n").unwrap();
        let mut s = FileSource::open(&p, 2).unwrap();
        let c1 = s.next_chunk().unwrap().unwrap();
        assert_eq!(c1.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(c1[1].payload.as_deref(), Some(&b""[..]), "empty line kept as a record");
        assert_eq!(c1[0].topic, "in.jsonl");
        assert_eq!(s.next_chunk().unwrap().unwrap().len(), 2);
        assert!(s.next_chunk().is_none());
        // The newline ending a file starts no record; one line without it is
        // a record; a file of one newline holds none, of two, two empty ones.
        for (text, lines) in [("", 0), ("\n", 0), ("\n\n", 2), ("{}", 1), ("{}\n{}", 2), ("{}\n\n", 2)] {
            std::fs::write(&p, text).unwrap();
            let mut s = FileSource::open(&p, 10).unwrap();
            let n = s.next_chunk().map_or(0, |c| c.unwrap().len());
            assert_eq!(n, lines, "{text:?}");
            assert!(s.next_chunk().is_none());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
