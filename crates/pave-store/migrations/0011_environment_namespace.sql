-- The Kubernetes namespace of an environment on a cluster target (NULL: the
-- environment's name).
ALTER TABLE environments ADD COLUMN namespace TEXT;
