# Blast-radius limits: an action touching many objects in production, or a
# scale or deploy to many replicas anywhere, needs approval. Like the
# production rule, neither asks again while the approval is being given
# (input.approval set). Uses `production` and `approval_given` from
# production.rego.
package pave

import rego.v1

# More objects than this in one production action needs approval.
max_objects_without_approval := 5

# More replicas than this in a scale or deploy needs approval.
max_replicas_without_approval := 10

# The action kinds whose input.replicas is checked.
replica_kinds := {"scale", "deploy"}

# The input checks that usually fail come first: in regorus every reference
# to another rule (here the helpers of production.rego) costs an evaluation step.
require_approval contains msg if {
	n := input.action.object_count
	n > max_objects_without_approval
	production
	not approval_given
	msg := sprintf(
		"%s touches %v objects in production environment %s (more than %v) and needs approval",
		[input.action.kind, n, input.environment.name, max_objects_without_approval],
	)
}

require_approval contains msg if {
	n := input.action.input.replicas
	is_number(n)
	n > max_replicas_without_approval
	input.action.kind in replica_kinds
	not approval_given
	name := object.get(input.action.input, "name", "the workload")
	msg := sprintf("scaling %s to %v replicas (more than %v) needs approval", [name, n, max_replicas_without_approval])
}
