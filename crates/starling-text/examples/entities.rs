//! Prints the entities and weighted length of each argument.
fn main() {
    for arg in std::env::args().skip(1) {
        println!("{arg:?}");
        for e in starling_text::extract_entities(&arg).all() {
            println!("  {:?} {:?} [{}, {})", e.kind, e.text, e.start, e.end);
        }
        println!("  {:?}", starling_text::weighted_length(&arg));
    }
}
