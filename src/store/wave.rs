//! A batch's event plans applied in waves, each table written with one statement per wave.
//!
//! The contract of a batch is that it leaves the state, the transitions and the chain that
//! committing its plans one at a time, in the order they came, would leave. Every row a plan
//! writes belongs to a repository it names (the repository row, its controls and history,
//! the images and their scans, signatures and re-checks), so plans that name no repository in
//! common touch disjoint rows and commute: a wave gathers such plans, and writing the wave
//! table by table, in the order one plan writes its tables, is the same as writing its plans
//! one after another. A plan sharing a repository with an earlier one goes into a later wave
//! than it; a plan that schedules re-checks across repositories (a Signer revocation) has a
//! wave to itself, after every plan before it and before every plan after it.

use std::collections::HashMap;

use super::digest::{apply_scans, apply_signatures};
use super::history::{Derived, HistoryWrite};
use super::sets::{RepositoryRowKey, repository_row_key};
use super::upsert::{upsert_images, upsert_repositories};
use super::write::{
    Cause, ControlChange, ControlWrite, changed_by, is_observation, repository_state_label,
    upsert_controls,
};
use super::{EventPlan, ImageWrite, RepositoryWrite, SignatureChange, SignatureWrite, StoreError};
use crate::evidence::detail::{RepositoryAfter, SettingsAtPush};
use sqlx::{Postgres, Transaction};

/// A plan of the batch: its position in the batch, and the plan.
pub(super) type Placed<'a> = (usize, &'a EventPlan);

/// What applying one plan did, for its evidence records.
#[derive(Default)]
pub(super) struct Effects<'a> {
    /// What each repository write did, in the plan's order.
    pub repositories: Vec<RepositoryAfter>,
    /// The controls whose status changed.
    pub transitions: Vec<ControlChange>,
    /// The images whose settings at push the history re-derived.
    pub derived: Vec<SettingsAtPush>,
    /// The signature verdicts that changed a digest's status.
    pub signature_changes: Vec<(&'a SignatureWrite, SignatureChange)>,
}

/// The repositories whose rows a plan writes.
fn touched(plan: &EventPlan) -> Vec<RepositoryRowKey> {
    let keys = plan
        .repositories
        .iter()
        .map(|w| &w.key)
        .chain(plan.image.iter().map(|i| &i.key))
        .chain(plan.deletions.iter().map(|i| &i.key))
        .chain(plan.scans.iter().map(|s| &s.key))
        .chain(plan.signatures.iter().map(|s| &s.key));
    let mut keys: Vec<RepositoryRowKey> = keys.map(repository_row_key).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Splits the plans, in the order they came, into waves (see the module docs).
pub(super) fn waves(plans: Vec<Placed<'_>>) -> Vec<Vec<Placed<'_>>> {
    let mut last_wave: HashMap<RepositoryRowKey, usize> = HashMap::new();
    // The first wave a plan may join: the one after the last barrier.
    let mut floor = 0;
    let mut waves: Vec<Vec<Placed<'_>>> = Vec::new();
    for (index, plan) in plans {
        let keys = touched(plan);
        let after_shared = keys
            .iter()
            .filter_map(|key| last_wave.get(key))
            .map(|wave| wave + 1)
            .max()
            .unwrap_or(0);
        let mut wave = after_shared.max(floor);
        if plan.reverify.is_some() {
            wave = wave.max(waves.len());
            floor = wave + 1;
        }
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push((index, plan));
        for key in keys {
            last_wave.insert(key, wave);
        }
    }
    waves
}

/// Applies a wave: repository writes (with their history, re-read schedule and controls),
/// images, deletions, scans, then signatures, each with one statement (or one per round where
/// a plan writes the same row twice). Returns each plan's effects, in the wave's order.
pub(super) async fn apply_wave<'a>(
    tx: &mut Transaction<'_, Postgres>,
    wave: &[Placed<'a>],
    restored_window: chrono::Duration,
) -> Result<Vec<Effects<'a>>, StoreError> {
    let mut effects: Vec<Effects<'a>> = wave.iter().map(|_| Effects::default()).collect();
    let owner: HashMap<RepositoryRowKey, usize> = wave
        .iter()
        .enumerate()
        .flat_map(|(at, (_, plan))| touched(plan).into_iter().map(move |key| (key, at)))
        .collect();
    apply_repository_writes(tx, wave, restored_window, &owner, &mut effects).await?;

    let images: Vec<&ImageWrite> = wave.iter().filter_map(|(_, p)| p.image.as_ref()).collect();
    upsert_images(tx, &images).await?;
    let settled: Vec<_> = images
        .iter()
        .filter(|image| image.settings_observed_at.is_some())
        .map(|image| (&image.key, Some(&image.digest)))
        .collect();
    let derived = super::history::derive(tx, &settled).await?;
    attribute(derived, &owner, &mut effects);

    // In digest order within each plan, as every other batch touching the same rows takes them.
    let deletions: Vec<&ImageWrite> = wave
        .iter()
        .flat_map(|(_, plan)| {
            let mut deletions: Vec<&ImageWrite> = plan.deletions.iter().collect();
            deletions.sort_by(|a, b| (&a.key, &a.digest).cmp(&(&b.key, &b.digest)));
            deletions
        })
        .collect();
    upsert_images(tx, &deletions).await?;

    let scans: Vec<_> = wave.iter().flat_map(|(_, p)| &p.scans).collect();
    apply_scans(tx, &scans).await?;

    let signatures: Vec<(usize, &'a SignatureWrite)> = wave
        .iter()
        .enumerate()
        .flat_map(|(at, (_, plan))| plan.signatures.iter().map(move |s| (at, s)))
        .collect();
    let writes: Vec<&SignatureWrite> = signatures.iter().map(|(_, w)| *w).collect();
    let changes = apply_signatures(tx, &writes, false).await?;
    for ((at, write), change) in signatures.into_iter().zip(changes) {
        if let Some(change) = change {
            effects[at].signature_changes.push((write, change));
        }
    }
    Ok(effects)
}

/// Gives each re-derived image to the plan of the wave that owns its repository.
fn attribute(
    derived: Vec<Derived>,
    owner: &HashMap<RepositoryRowKey, usize>,
    effects: &mut [Effects<'_>],
) {
    for Derived {
        account,
        region,
        settings,
    } in derived
    {
        let key = (account, region, settings.repository.clone());
        if let Some(&at) = owner.get(&key) {
            effects[at].derived.push(settings);
        }
    }
}

/// Writes the wave's repository reads and their controls, a round per position in the plans'
/// lists of writes (a plan's second write follows its first); records what each write did,
/// the controls whose status changed and the settings at push re-derived.
async fn apply_repository_writes<'a>(
    tx: &mut Transaction<'_, Postgres>,
    wave: &[Placed<'a>],
    restored_window: chrono::Duration,
    owner: &HashMap<RepositoryRowKey, usize>,
    effects: &mut [Effects<'a>],
) -> Result<(), StoreError> {
    let rounds = wave
        .iter()
        .map(|(_, plan)| plan.repositories.len())
        .max()
        .unwrap_or(0);
    let mut requested_applied = vec![false; wave.len()];
    for round in 0..rounds {
        let writes: Vec<(usize, &'a RepositoryWrite)> = wave
            .iter()
            .enumerate()
            .filter_map(|(at, (_, plan))| plan.repositories.get(round).map(|w| (at, w)))
            .collect();
        // The re-read behind a requested state counts only when the requested state was older
        // than what is stored (see `RepositoryWrite::fallback`).
        let skipped = |at: usize, write: &RepositoryWrite| write.fallback && requested_applied[at];
        let attempted: Vec<&RepositoryWrite> = writes
            .iter()
            .filter(|(at, write)| !skipped(*at, write))
            .map(|(_, write)| *write)
            .collect();
        let written = upsert_repositories(tx, &attempted).await?;
        let applied: Vec<bool> = writes
            .iter()
            .map(|(at, write)| {
                !skipped(*at, write) && written.contains(&repository_row_key(&write.key))
            })
            .collect();
        for ((at, write), applied) in writes.iter().zip(&applied) {
            requested_applied[*at] = write.requested && *applied;
        }
        record_round(tx, wave, &writes, &applied, owner, effects).await?;
        control_round(tx, wave, &writes, &applied, restored_window, effects).await?;
    }
    Ok(())
}

/// A round's history rows, re-read schedule and each write's account of itself.
async fn record_round<'a>(
    tx: &mut Transaction<'_, Postgres>,
    wave: &[Placed<'a>],
    writes: &[(usize, &'a RepositoryWrite)],
    applied: &[bool],
    owner: &HashMap<RepositoryRowKey, usize>,
    effects: &mut [Effects<'a>],
) -> Result<(), StoreError> {
    let history: Vec<HistoryWrite<'_>> = writes
        .iter()
        .zip(applied)
        .map(|((at, write), applied)| HistoryWrite {
            write,
            applied: *applied,
            changed_by: changed_by(&wave[*at].1.event),
        })
        .collect();
    let derived = super::history::record(tx, &history).await?;
    attribute(derived, owner, effects);
    let reads: Vec<(&RepositoryWrite, bool)> = writes
        .iter()
        .zip(applied)
        .map(|((_, write), applied)| (*write, *applied))
        .collect();
    super::rereads::schedule_or_clear(tx, &reads).await?;
    for ((at, write), applied) in writes.iter().zip(applied) {
        effects[*at].repositories.push(RepositoryAfter {
            repository: write.key.name.to_string(),
            state: repository_state_label(&write.facts.state),
            facts_observed_at: write.facts.observed_at.to_rfc3339(),
            applied: *applied,
            controls_after: write.controls.as_ref().map(|controls| {
                controls
                    .iter()
                    .map(|(c, v)| (c.as_str().to_owned(), v.clone()))
                    .collect()
            }),
        });
    }
    Ok(())
}

/// The control verdicts of a round's applied writes, and the transitions they made.
async fn control_round<'a>(
    tx: &mut Transaction<'_, Postgres>,
    wave: &[Placed<'a>],
    writes: &[(usize, &'a RepositoryWrite)],
    applied: &[bool],
    restored_window: chrono::Duration,
    effects: &mut [Effects<'a>],
) -> Result<(), StoreError> {
    let mut owners = Vec::new();
    let mut controls = Vec::new();
    for ((at, write), applied) in writes.iter().zip(applied) {
        let (Some(verdicts), true) = (&write.controls, *applied) else {
            continue;
        };
        let event = &wave[*at].1.event;
        owners.push((*at, write.key.name.to_string()));
        controls.push(ControlWrite {
            write,
            controls: verdicts,
            cause: Cause {
                by: changed_by(event),
                at: event.time,
                restored_window,
                observed: is_observation(event),
            },
        });
    }
    let changed = upsert_controls(tx, &controls).await?;
    for ((at, repository), changes) in owners.into_iter().zip(changed) {
        for (control, from, to, restored) in changes {
            effects[at]
                .transitions
                .push((repository.clone(), control, from, to, restored));
        }
    }
    Ok(())
}
