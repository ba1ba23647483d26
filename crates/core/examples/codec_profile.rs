//! Where a 1 MB lz4+aes write and read spend their time, component by
//! component (medians of 21 runs). `cargo run --release --example codec_profile`
use std::hint::black_box;
use std::time::Instant;

use konserve_core::codec::{aes, lz4};
use xxhash_rust::xxh3::xxh3_64;

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..21)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[10]
}

fn main() {
    let n = 1 << 20;
    // Half pseudo-random, half repetitive, as bench/codec.mjs writes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v: Vec<u8> = (0..n / 2)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    v.extend(b"konserve ".iter().cycle().take(n / 2));
    let frame = lz4::compress(&v);
    let sealed = aes::seal(b"k", 1, 7, &frame, &[1; 16], &[2; 16]);
    println!("lz4 compress    {:.2} ms", median_ms(|| drop(black_box(lz4::compress(&v)))));
    println!("lz4 decompress  {:.2} ms", median_ms(|| drop(black_box(lz4::decompress(&frame).unwrap()))));
    println!("aes seal        {:.2} ms", median_ms(|| drop(black_box(aes::seal(b"k", 1, 7, &frame, &[1; 16], &[2; 16])))));
    println!("aes open        {:.2} ms", median_ms(|| drop(black_box(aes::open(b"k", 1, 7, &sealed).unwrap()))));
    println!("xxh3_64         {:.2} ms", median_ms(|| _ = black_box(xxh3_64(&sealed))));
    println!("frame {} bytes of {}", frame.len(), n);
}
