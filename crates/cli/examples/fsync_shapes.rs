use std::os::unix::fs::FileExt;
use std::time::Instant;
fn main() {
    let dir = tempfile::tempdir_in("/work").unwrap();
    let f = std::fs::OpenOptions::new().create(true).read(true).write(true).open(dir.path().join("w")).unwrap();
    let page = [7u8; 4096]; let hdr = [1u8; 24];
    let n = 2000;
    // append pattern like WAL growth
    let mut off = 0u64;
    let t = Instant::now();
    for _ in 0..n { for _ in 0..2 { f.write_at(&hdr, off).unwrap(); off += 24; f.write_at(&page, off).unwrap(); off += 4096; } f.sync_all().unwrap(); }
    println!("append 2 frames + fsync: {:.1} us", t.elapsed().as_secs_f64()*1e6/n as f64);
    let t = Instant::now();
    off = 0;
    for _ in 0..n { for _ in 0..2 { f.write_at(&hdr, off).unwrap(); off += 24; f.write_at(&page, off).unwrap(); off += 4096; } f.sync_all().unwrap(); }
    println!("overwrite 2 frames + fsync: {:.1} us", t.elapsed().as_secs_f64()*1e6/n as f64);
    let t = Instant::now();
    off = 0;
    for _ in 0..n { for _ in 0..2 { f.write_at(&hdr, off).unwrap(); off += 24; f.write_at(&page, off).unwrap(); off += 4096; } f.sync_data().unwrap(); }
    println!("overwrite 2 frames + fdatasync: {:.1} us", t.elapsed().as_secs_f64()*1e6/n as f64);
    let t = Instant::now();
    for _ in 0..n { f.write_at(&page, 0).unwrap(); f.sync_all().unwrap(); }
    println!("overwrite 1 page in place + fsync: {:.1} us", t.elapsed().as_secs_f64()*1e6/n as f64);
    let t = Instant::now();
    off = 0;
    for _ in 0..n { f.write_at(&page, off).unwrap(); off += 4096; f.sync_all().unwrap(); }
    println!("overwrite 1 page moving + fsync: {:.1} us", t.elapsed().as_secs_f64()*1e6/n as f64);
}
