# Production environments: an environment labelled tier=production runs an
# action only once an operator other than the requester has approved it.
# When the approver re-evaluates the request (input.approval is set) the
# approval is being given now, so this module does not ask for it again.
#
# Also defines the helpers `production` and `approval_given` that the other
# modules of the pack use.
package pave

import rego.v1

production if input.environment.labels.tier == "production"

approval_given if {
	input.approval != null
}

require_approval contains msg if {
	production
	not approval_given
	msg := sprintf(
		"%s in production environment %s needs approval by an operator other than the requester",
		[input.action.kind, input.environment.name],
	)
}
