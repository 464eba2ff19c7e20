# Unit tests of the default pack (`opa test` convention: every rule named
# test_* is evaluated with no input and passes when it is true). pave runs
# them with PolicySet::run_tests; a Rust unit test asserts they all pass.
package pave_test

import rego.v1

# A deploy of payments to a production environment, as the engine builds it.
prod_deploy := {
	"actor": {
		"user": "alice",
		"teams": ["payments"],
		"role": "developer",
		"roles": {"payments-prod": "developer", "*": "viewer"},
	},
	"action": {
		"kind": "deploy",
		"input": {"name": "payments", "replicas": 3, "env": {"FEATURE_X": "1"}},
		"objects": ["workload/payments-prod/payments"],
		"object_count": 1,
		"steps": ["apply revision", "wait until ready", "retire previous revision"],
	},
	"environment": {"name": "payments-prod", "target": "local", "labels": {"tier": "production"}},
	"approval": null,
	"time_ms": 1796347500000,
}

prod_reason := "deploy in production environment payments-prod needs approval by an operator other than the requester"

approved := object.union(prod_deploy, {"approval": {"by": "bob", "amended": true}})

staging_deploy := object.union(prod_deploy, {"environment": {"name": "payments-staging", "labels": {"tier": "staging"}}})

# The production environment, also labelled regulated=true.
regulated_prod := object.union(prod_deploy, {"environment": {"labels": {"regulated": "true"}}})

exec_in(doc) := object.union(doc, {"action": {
	"kind": "exec",
	"input": {"workload": "payments", "command": ["sh"]},
	"steps": ["exec"],
}})

with_objects(doc, n) := object.union(doc, {"action": {"object_count": n, "objects": [sprintf("workload/x/w%v", [i]) | some i in numbers.range(1, n)]}})

with_replicas(doc, kind, n) := object.union(doc, {"action": {"kind": kind, "input": {"replicas": n}}})

# production.rego

test_production_deploy_requires_approval if {
	data.pave.require_approval == {prod_reason} with input as prod_deploy
	count(data.pave.deny) == 0 with input as prod_deploy
}

test_production_not_asked_again_while_approving if {
	count(data.pave.require_approval) == 0 with input as approved
	count(data.pave.deny) == 0 with input as approved
}

test_staging_deploy_allowed if {
	count(data.pave.require_approval) == 0 with input as staging_deploy
	count(data.pave.deny) == 0 with input as staging_deploy
}

test_no_labels_allowed if {
	doc := json.remove(prod_deploy, ["environment/labels"])
	count(data.pave.require_approval) == 0 with input as doc
	count(data.pave.deny) == 0 with input as doc
}

# regulated.rego

test_regulated_exec_denied if {
	data.pave.deny == {"exec is not allowed in regulated environment payments-prod"} with input as exec_in(regulated_prod)
}

test_regulated_exec_denied_even_when_approved if {
	doc := object.union(exec_in(regulated_prod), {"approval": {"by": "bob", "amended": false}})
	count(data.pave.deny) == 1 with input as doc
}

test_regulated_deploy_not_denied if {
	count(data.pave.deny) == 0 with input as regulated_prod
}

test_unregulated_exec_not_denied if {
	count(data.pave.deny) == 0 with input as exec_in(staging_deploy)
	count(data.pave.deny) == 0 with input as exec_in(prod_deploy)
}

test_regulated_false_exec_not_denied if {
	doc := object.union(exec_in(prod_deploy), {"environment": {"labels": {"regulated": "false"}}})
	count(data.pave.deny) == 0 with input as doc
}

# limits.rego: objects

test_many_objects_in_production_requires_approval if {
	reasons := data.pave.require_approval with input as with_objects(prod_deploy, 6)
	reasons == {
		prod_reason,
		"deploy touches 6 objects in production environment payments-prod (more than 5) and needs approval",
	}
}

test_five_objects_in_production_only_production_reason if {
	data.pave.require_approval == {prod_reason} with input as with_objects(prod_deploy, 5)
}

test_many_objects_in_staging_allowed if {
	count(data.pave.require_approval) == 0 with input as with_objects(staging_deploy, 50)
}

test_many_objects_not_asked_again_while_approving if {
	count(data.pave.require_approval) == 0 with input as with_objects(approved, 50)
}

# limits.rego: replicas

test_deploy_many_replicas_requires_approval if {
	reasons := data.pave.require_approval with input as with_replicas(staging_deploy, "deploy", 12)
	reasons == {"scaling payments to 12 replicas (more than 10) needs approval"}
}

test_scale_many_replicas_requires_approval if {
	reasons := data.pave.require_approval with input as with_replicas(staging_deploy, "scale", 11)
	reasons == {"scaling payments to 11 replicas (more than 10) needs approval"}
}

test_ten_replicas_allowed if {
	count(data.pave.require_approval) == 0 with input as with_replicas(staging_deploy, "scale", 10)
}

test_replicas_of_other_kinds_ignored if {
	count(data.pave.require_approval) == 0 with input as with_replicas(staging_deploy, "restart", 50)
}

test_non_numeric_replicas_ignored if {
	count(data.pave.require_approval) == 0 with input as with_replicas(staging_deploy, "scale", "50")
}

test_many_replicas_not_asked_again_while_approving if {
	count(data.pave.require_approval) == 0 with input as with_replicas(approved, "scale", 50)
}

test_many_replicas_in_production_gives_both_reasons if {
	reasons := data.pave.require_approval with input as with_replicas(prod_deploy, "deploy", 12)
	reasons == {prod_reason, "scaling payments to 12 replicas (more than 10) needs approval"}
}

# No input at all (as when the tests run): nothing asked, nothing denied.
test_no_input_allowed if {
	count(data.pave.require_approval) == 0
	count(data.pave.deny) == 0
}
