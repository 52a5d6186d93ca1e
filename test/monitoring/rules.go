package monitoring

import "github.com/seed-a17b38e7/workerpool-operator/test/promconfig"

// RuleGroups and RuleFile are promconfig's: the server in the e2e suite
// reads the same rule file promtool tests here.
var (
	RuleGroups = promconfig.RuleGroups
	RuleFile   = promconfig.RuleFile
)

// The dashboard reader is promconfig's too: the e2e suite runs the same
// queries against a live Prometheus.
type (
	Dashboard  = promconfig.Dashboard
	Variable   = promconfig.Variable
	Panel      = promconfig.Panel
	PanelQuery = promconfig.PanelQuery
)

var (
	ReadDashboard    = promconfig.ReadDashboard
	ExpandVariables  = promconfig.ExpandVariables
	LabelValuesQuery = promconfig.LabelValuesQuery
)
