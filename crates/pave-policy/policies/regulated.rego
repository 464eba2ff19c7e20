# Regulated environments: an environment labelled regulated=true allows no
# interactive access, so `exec` is denied there outright (no approval can
# override a deny).
package pave

import rego.v1

# The action kinds refused in a regulated environment.
denied_in_regulated := {"exec"}

# The label is tested inline, first: most environments are not regulated, and
# in regorus every reference to another rule costs an evaluation step.
deny contains msg if {
	input.environment.labels.regulated == "true"
	input.action.kind in denied_in_regulated
	msg := sprintf("%s is not allowed in regulated environment %s", [input.action.kind, input.environment.name])
}
