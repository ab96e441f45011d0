//! Prints `id<TAB>file:line<TAB>nested` for every post read from the given files or directories.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let inputs: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    for f in starling_corpus::corpus::expand_inputs(&inputs)? {
        starling_corpus::read::read_file(&f, &Default::default(), &mut |item| {
            if let starling_corpus::read::Item::Post(p) = item {
                println!(
                    "{}\t{}:{}\t{}",
                    p.id, p.origin.file, p.origin.line, p.origin.nested
                );
            }
        })?;
    }
    Ok(())
}
