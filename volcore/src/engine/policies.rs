//! Policies with revisions, and the global configuration.

use tracing::instrument;

use super::*;

impl Volumes {
    // ----- policies -------------------------------------------------------------------

    /// Validates and stores a policy; records it as a new revision. Existing volumes are
    /// untouched (each has its own copy).
    #[instrument(skip(self, json), fields(policy = %name))]
    pub async fn upload_policy(
        &self,
        name: &PolicyName,
        json: &[u8],
    ) -> Result<PolicyRevision, EngineError> {
        let global = self.global.borrow().clone();
        let r = store_policy(self.kv.as_ref(), &self.keys, name, json, &global).await?;
        info!(revision = r.revision, "policy uploaded");
        Ok(r)
    }

    /// The current policy.
    pub async fn policy(&self, name: &PolicyName) -> Result<Policy, EngineError> {
        let e = self.kv.get(&self.keys.policy(name)).await?.ok_or_else(|| {
            EngineError::PolicyNotFound {
                policy: name.clone(),
            }
        })?;
        Policy::from_stored_json(&e.value).map_err(EngineError::Invalid)
    }

    /// Every current policy, by name.
    pub async fn policies(&self) -> Result<Vec<Policy>, EngineError> {
        let entries = self.kv.list(&self.keys.policies()).await?;
        entries
            .iter()
            .map(|e| Policy::from_stored_json(&e.value).map_err(EngineError::Invalid))
            .collect()
    }

    /// Deletes a policy. Refused while it has volumes unless `force`; volumes keep their
    /// own copy either way, and revisions are kept.
    #[instrument(skip(self), fields(policy = %name))]
    pub async fn delete_policy(&self, name: &PolicyName, force: bool) -> Result<(), EngineError> {
        let key = self.keys.policy(name);
        let e = self
            .kv
            .get(&key)
            .await?
            .ok_or_else(|| EngineError::PolicyNotFound {
                policy: name.clone(),
            })?;
        let count = self.kv.list(&self.keys.volumes(Some(name))).await?.len();
        if count > 0 && !force {
            return Err(EngineError::PolicyInUse {
                policy: name.clone(),
                count,
            });
        }
        match self
            .kv
            .delete(&key, Precondition::Revision(e.mod_rev))
            .await
        {
            Ok(_) => Ok(()),
            Err(KvError::Conflict { current: None, .. }) => Err(EngineError::PolicyNotFound {
                policy: name.clone(),
            }),
            Err(KvError::Conflict { .. }) => Err(EngineError::ChangedMeanwhile {
                what: format!("policy {name}"),
                doing: "deleted",
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A policy's revisions, oldest first.
    pub async fn policy_revisions(&self, name: &PolicyName) -> Result<Vec<Revision>, EngineError> {
        let entries = self.kv.list(&self.keys.policy_revisions(name)).await?;
        if entries.is_empty() && self.kv.get(&self.keys.policy(name)).await?.is_none() {
            return Err(EngineError::PolicyNotFound {
                policy: name.clone(),
            });
        }
        Ok(entries
            .iter()
            .filter_map(|e| e.key.rsplit('/').next().and_then(|r| r.parse().ok()))
            .collect())
    }

    /// One revision of a policy.
    pub async fn policy_revision(
        &self,
        name: &PolicyName,
        revision: Revision,
    ) -> Result<PolicyRevision, EngineError> {
        let e = self
            .kv
            .get(&self.keys.policy_revision(name, revision))
            .await?
            .ok_or_else(|| EngineError::RevisionNotFound {
                policy: name.clone(),
                revision,
            })?;
        Ok(PolicyRevision {
            revision,
            policy: Policy::from_stored_json(&e.value)?,
        })
    }

    // ----- global ---------------------------------------------------------------------

    /// The stored global configuration (defaults when none is stored).
    pub async fn global(&self) -> Result<GlobalConfig, EngineError> {
        match self.kv.get(&self.keys.global()).await? {
            None => Ok(GlobalConfig::default()),
            Some(e) => Ok(GlobalConfig::from_json(&e.value)?),
        }
    }

    /// Validates and stores the global configuration.
    pub async fn set_global(&self, json: &[u8]) -> Result<GlobalConfig, EngineError> {
        let g = GlobalConfig::from_json(json)?;
        self.kv
            .put(&self.keys.global(), g.to_json(), Default::default())
            .await?;
        Ok(g)
    }
}

/// Validates a policy and stores it as the current one and as a new revision. The
/// revision key is named by the store revision of the upload, so two uploads never share
/// one (volplugin keyed them by wall-clock seconds). For tools that seed a store without
/// an engine (volstack's defaults); everything else goes through
/// [`Volumes::upload_policy`].
pub async fn store_policy(
    kv: &dyn KvStore,
    keys: &Keys,
    name: &PolicyName,
    json: &[u8],
    global: &GlobalConfig,
) -> Result<PolicyRevision, EngineError> {
    let policy = Policy::from_json(name, json)?;
    policy.check_mkfs_allowed(&global.mkfs_allowlist())?;
    let bytes = policy.to_json();
    let revision = kv
        .put(&keys.policy(name), bytes.clone(), Default::default())
        .await?;
    kv.put(
        &keys.policy_revision(name, revision),
        bytes,
        crate::kv::PutOpts::absent(),
    )
    .await?;
    Ok(PolicyRevision { revision, policy })
}
