//! Build script: rebuilds the crate when a migration is added or changed, since
//! `sqlx::migrate!` embeds `migrations/` at compile time and cargo does not watch that folder.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
