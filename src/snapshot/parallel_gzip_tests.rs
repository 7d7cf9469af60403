//! Tests of `parallel_gzip.rs`, kept apart so the module itself stays readable.

use super::*;
use std::io::Read;

const MIB: usize = 1 << 20;

fn compress(data: &[u8]) -> Vec<u8> {
    compress_with(data, None).0
}

fn compress_with(data: &[u8], cache: Option<&dyn MemberCache>) -> (Vec<u8>, Vec<Member>) {
    // Written in pieces of odd sizes, as a tar writer writes.
    let (produced, compressed) = compress_stream(Vec::new(), 6, cache, |chunks| -> io::Result<()> {
        for piece in data.chunks(77_777) {
            chunks.write_all(piece)?;
        }
        Ok(())
    });
    produced.unwrap();
    let compressed = compressed.unwrap();
    assert_eq!(compressed.input, Digest::sha256_of(data));
    assert_eq!(compressed.input_bytes, data.len() as u64);
    (compressed.output, compressed.members)
}

fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed).read_to_end(&mut decoded).unwrap();
    decoded
}

/// Text of pseudo-random words: compressible, and without repeats a fixed cut would align on.
fn words(length: usize, seed: u64) -> Vec<u8> {
    let names: [&[u8]; 8] = [b"alpha ", b"bravo ", b"charlie ", b"delta ", b"echo ", b"foxtrot ", b"golf\n", b"hotel "];
    let mut state = seed | 1;
    let mut text = Vec::with_capacity(length + 8);
    while text.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.extend_from_slice(names[(state % 8) as usize]);
    }
    text.truncate(length);
    text
}

/// A cache of the members of earlier outputs, counting what it hands out.
#[derive(Default)]
struct Remembered {
    members: std::collections::HashMap<Digest, Vec<u8>>,
    handed: std::sync::atomic::AtomicUsize,
}

impl Remembered {
    fn learn(&mut self, output: &[u8], members: &[Member]) {
        for (chunk, offset, length) in members {
            self.members.insert(chunk.clone(), output[*offset as usize..(*offset + *length) as usize].to_vec());
        }
    }
}

impl MemberCache for Remembered {
    fn member(&self, chunk: &Digest, _level: u32) -> Option<CachedMember> {
        let bytes = self.members.get(chunk).cloned()?;
        self.handed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(CachedMember { bytes, checked: false })
    }
}

#[test]
fn an_edit_moves_only_the_cuts_near_it_and_the_rest_is_reused() {
    let before = words(12 * MIB, 3);
    let mut after = before.clone();
    // Nine bytes inserted in the middle: every later offset moves.
    after.splice(6 * MIB..6 * MIB, b"inserted!".iter().copied());
    let (first, first_members) = compress_with(&before, None);
    assert!(first_members.len() >= 4, "{} chunks", first_members.len());
    let mut cache = Remembered::default();
    cache.learn(&first, &first_members);
    let (second, second_members) = compress_with(&after, Some(&cache));
    let handed = cache.handed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(handed + 2 >= second_members.len(), "{handed} of {} chunks reused", second_members.len());
    // Reused or not, the output is what compressing gives, and holds the input.
    assert_eq!(second, compress(&after));
    assert_eq!(inflate(&second), after);
}

#[test]
fn a_damaged_member_is_never_copied() {
    let data = words(3 * MIB, 5);
    let (output, members) = compress_with(&data, None);
    let mut cache = Remembered::default();
    cache.learn(&output, &members);
    for member in cache.members.values_mut() {
        let middle = member.len() / 2;
        member[middle] ^= 0x55;
    }
    let (again, _) = compress_with(&data, Some(&cache));
    assert_eq!(again, output);
}

#[test]
fn members_decompress_to_the_input_and_are_deterministic() {
    let data: Vec<u8> = (0..(3 * MIB + 12345)).map(|i| (i * 7 % 251) as u8).collect();
    let compressed = compress(&data);
    assert_eq!(compressed, compress(&data));
    let mut decoded = Vec::new();
    flate2::read::MultiGzDecoder::new(&compressed[..]).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, data);
    // The system gunzip agrees (all members).
    let mut child = std::process::Command::new("gzip")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&compressed).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(output.stdout, data);
}

/// Pseudo-random bytes (xorshift), as incompressible as encrypted data.
fn random(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn incompressible_chunks_are_stored_and_compressible_ones_compressed() {
    let noise = random(2 * MIB, 7);
    let text: Vec<u8> = b"alpha bravo charlie delta echo foxtrot\n".iter().cycle().take(2 * MIB).copied().collect();
    // Half a chunk of noise, half of text: the samples see the text, the chunk is compressed.
    let mut mixed = noise[..MIB / 2].to_vec();
    mixed.extend_from_slice(&text[..MIB / 2]);
    assert!(incompressible(&noise[..MIB]));
    assert!(!incompressible(&text[..MIB]));
    assert!(!incompressible(&mixed));
    assert!(!incompressible(&noise[..1000]), "too small to judge");
    // Only stored chunks: no empty member is added at the end (its ISIZE would be 0).
    let stored = compress(&noise);
    assert_eq!(inflate(&stored), noise);
    assert_ne!(stored[stored.len() - 4..], [0, 0, 0, 0]);
    let mut all = noise.clone();
    all.extend_from_slice(&text);
    all.extend_from_slice(&mixed);
    let compressed = compress(&all);
    let mut decoded = Vec::new();
    flate2::read::MultiGzDecoder::new(&compressed[..]).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, all);
    // Stored noise costs a few bytes a block; the text and half the mixed chunk shrink.
    let stored_overhead = 2 * MIB / 1000;
    assert!(compressed.len() < 2 * MIB + stored_overhead + MIB / 2 + MIB / 4, "{}", compressed.len());
    assert!(compressed.len() > 2 * MIB, "{}", compressed.len());
}

#[test]
fn a_stored_member_is_what_libdeflate_writes_at_level_0() {
    for size in [0, 1, 65_534, 65_535, 65_536, 131_070, 200_000] {
        let chunk = random(size, size as u64 + 3);
        let mut written = Vec::new();
        let length = write_stored_member(&mut written, &chunk, libdeflater::crc32(&chunk)).unwrap();
        assert_eq!(written, gzip_member(&chunk, 0, Vec::new()).unwrap(), "{size} bytes");
        assert_eq!(length, written.len() as u64);
    }
}

#[test]
fn empty_input_is_a_valid_gzip_file() {
    let compressed = compress(b"");
    let mut decoded = Vec::new();
    flate2::read::MultiGzDecoder::new(&compressed[..]).read_to_end(&mut decoded).unwrap();
    assert!(decoded.is_empty());
}

#[test]
fn a_failing_output_stops_the_producer_with_the_writers_error() {
    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let data = words(40 * MIB, 3);
    let (produced, compressed) = compress_stream(Failing, 6, None, |chunks| -> io::Result<()> {
        for piece in data.chunks(65_536) {
            chunks.write_all(piece)?;
        }
        Ok(())
    });
    assert_eq!(produced.unwrap_err().to_string(), "the compressor stopped");
    assert_eq!(compressed.err().unwrap().to_string(), "disk full");
}
