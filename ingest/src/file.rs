//! JSON Lines file source: the whole file is read up front, then handed out in
//! chunks, so a benchmark measures the pipeline and not the disk.

use std::path::Path;

use switchyard_schemas::RawRecord;

use crate::{Error, Result};

/// A bounded source over the lines of a JSON Lines file. Records get the
/// file name as topic, partition 0 and the line number (from 0) as offset.
pub struct FileSource {
    records: std::vec::IntoIter<RawRecord>,
    chunk_size: usize,
}

impl FileSource {
    /// Reads `path`. Every line is a record, empty ones too (they go to the
    /// DLQ as empty payloads: nothing in the input is silently dropped); only
    /// the newline ending the file does not start a record.
    pub fn open(path: &Path, chunk_size: usize) -> Result<Self> {
        let text = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        let topic = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let received_us = chrono::Utc::now().timestamp_micros();
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        let records: Vec<RawRecord> = if body.is_empty() {
            Vec::new()
        } else {
            body.split(|b| *b == b'\n')
                .enumerate()
                .map(|(i, line)| RawRecord {
                    topic: topic.clone(),
                    partition: 0,
                    offset: i as i64,
                    payload: Some(line.to_vec()),
                    received_us,
                    ..RawRecord::default()
                })
                .collect()
        };
        Ok(Self { records: records.into_iter(), chunk_size: chunk_size.max(1) })
    }

    /// Records not yet handed out.
    pub fn remaining(&self) -> usize {
        self.records.len()
    }

    /// The next chunk, or `None` at the end of the file. Records are stamped
    /// with the time they are handed out, so latency excludes the file read.
    pub fn next_chunk(&mut self) -> Option<Vec<RawRecord>> {
        let now = chrono::Utc::now().timestamp_micros();
        let chunk: Vec<RawRecord> = self
            .records
            .by_ref()
            .take(self.chunk_size)
            .map(|mut r| {
                r.received_us = now;
                r
            })
            .collect();
        (!chunk.is_empty()).then_some(chunk)
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
        let c1 = s.next_chunk().unwrap();
        assert_eq!(c1.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(c1[1].payload.as_deref(), Some(&b""[..]), "empty line kept as a record");
        assert_eq!(c1[0].topic, "in.jsonl");
        assert_eq!(s.next_chunk().unwrap().len(), 2);
        assert!(s.next_chunk().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
