//! Helpers of the set-based batch writes: the key columns a statement binds as arrays, and the
//! split of a list into rounds in which no key repeats.
//!
//! An `INSERT … ON CONFLICT DO UPDATE` cannot touch one row twice, and an `UPDATE … FROM`
//! applies only one of several source rows that match the same row; so rows that share a key
//! go in successive statements, in their order, and each statement sees the writes before it.

use std::collections::HashMap;
use std::hash::Hash;

use crate::domain::{Digest, RepositoryKey};

/// Splits `items` into rounds, keeping their order: an item goes into the round after the
/// last one holding an earlier item with the same key, so no round repeats a key.
pub(super) fn rounds<T, K: Eq + Hash>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut rounds: Vec<Vec<T>> = Vec::new();
    for item in items {
        let count = seen.entry(key(&item)).or_insert(0);
        let round = *count;
        *count += 1;
        if rounds.len() <= round {
            rounds.push(Vec::new());
        }
        rounds[round].push(item);
    }
    rounds
}

/// The account, region and repository columns of a statement's rows.
#[derive(Default)]
pub(super) struct RepositoryColumns {
    pub account: Vec<String>,
    pub region: Vec<String>,
    pub repository: Vec<String>,
}

impl RepositoryColumns {
    pub fn push(&mut self, key: &RepositoryKey) {
        self.account.push(key.account.as_str().to_owned());
        self.region.push(key.region.as_str().to_owned());
        self.repository.push(key.name.as_str().to_owned());
    }

    pub fn is_empty(&self) -> bool {
        self.account.is_empty()
    }
}

impl<'a> FromIterator<&'a RepositoryKey> for RepositoryColumns {
    fn from_iter<I: IntoIterator<Item = &'a RepositoryKey>>(keys: I) -> Self {
        let mut columns = Self::default();
        for key in keys {
            columns.push(key);
        }
        columns
    }
}

/// The key columns of a statement's digest rows.
#[derive(Default)]
pub(super) struct DigestColumns {
    pub repository: RepositoryColumns,
    pub digest: Vec<String>,
}

impl DigestColumns {
    pub fn push(&mut self, key: &RepositoryKey, digest: &Digest) {
        self.repository.push(key);
        self.digest.push(digest.as_str().to_owned());
    }

    pub fn is_empty(&self) -> bool {
        self.digest.is_empty()
    }
}

impl<'a> FromIterator<(&'a RepositoryKey, &'a Digest)> for DigestColumns {
    fn from_iter<I: IntoIterator<Item = (&'a RepositoryKey, &'a Digest)>>(keys: I) -> Self {
        let mut columns = Self::default();
        for (key, digest) in keys {
            columns.push(key, digest);
        }
        columns
    }
}

/// A digest row's key as the statements return it: account, region, repository, digest.
pub(super) type DigestRowKey = (String, String, String, String);

/// The key of `digest` in `key`, as [`DigestRowKey`].
pub(super) fn digest_row_key(key: &RepositoryKey, digest: &Digest) -> DigestRowKey {
    (
        key.account.as_str().to_owned(),
        key.region.as_str().to_owned(),
        key.name.as_str().to_owned(),
        digest.as_str().to_owned(),
    )
}

/// A repository row's key as the statements return it: account, region, name.
pub(super) type RepositoryRowKey = (String, String, String);

pub(super) fn repository_row_key(key: &RepositoryKey) -> RepositoryRowKey {
    (
        key.account.as_str().to_owned(),
        key.region.as_str().to_owned(),
        key.name.as_str().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::rounds;

    #[test]
    fn a_repeated_key_goes_to_the_next_round_in_order() {
        let split = rounds(
            vec![("a", 1), ("b", 2), ("a", 3), ("a", 4), ("c", 5)],
            |x| x.0,
        );
        assert_eq!(
            split,
            vec![
                vec![("a", 1), ("b", 2), ("c", 5)],
                vec![("a", 3)],
                vec![("a", 4)]
            ]
        );
    }
}
