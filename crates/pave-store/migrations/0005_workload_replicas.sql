-- Replicas belong to the workload, not to its revisions (as on Kubernetes,
-- where scaling makes no new revision): NULL until a rollout sets it.
ALTER TABLE workloads ADD COLUMN replicas BIGINT;
