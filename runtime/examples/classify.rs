//! Embeds the runtime without HTTP: loads a bundle and classifies an image file.
//!
//! `cargo run -p tandem-runtime --example classify -- models/mnist-student digit.png`

use tandem_runtime::image::GrayImage;
use tandem_runtime::{ClassifyRequest, Runtime, RuntimeConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bundle), Some(image)) = (args.next(), args.next()) else {
        return Err("usage: classify <bundle-dir> <image.png>".into());
    };
    let runtime = Runtime::new(RuntimeConfig::default());
    let info = runtime.load(bundle.as_ref())?;
    let image = GrayImage::decode(&std::fs::read(image)?)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let res = rt.block_on(runtime.classify(&info.id, ClassifyRequest { images: vec![image], top_k: 3 }))?;
    for p in &res.predictions[0] {
        println!("{:>12}  {:.4}", p.label, p.score);
    }
    Ok(())
}
