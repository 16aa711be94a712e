// Command promexprs prints every PromQL expression kept in deploy/: the
// targets of the Grafana dashboards and the expressions of the Prometheus
// rules, one JSON object a line, with the series selectors each one reads.
// scripts/ci-ops.sh checks their syntax with promtool and asks a running
// Prometheus whether each returns data.
//
//	go -C deploy run ./promexprs                      # from the repository root
//	go -C deploy run ./promexprs -rules prometheus/alerts.yml grafana/dashboards/kbatch.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	rules := flag.String("rules", "prometheus/alerts.yml", "Prometheus rules file")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: promexprs [-rules FILE] [DASHBOARD.json ...]   (default: grafana/dashboards/*.json)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*rules, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "promexprs:", err)
		os.Exit(1)
	}
}

func run(rules string, dashboards []string) error {
	if len(dashboards) == 0 {
		var err error
		if dashboards, err = filepath.Glob("grafana/dashboards/*.json"); err != nil {
			return err
		}
		if len(dashboards) == 0 {
			return fmt.Errorf("no dashboard in grafana/dashboards (run from deploy/, or name them)")
		}
	}
	var all []Expr
	for _, d := range dashboards {
		es, err := dashboardExprs(d)
		if err != nil {
			return err
		}
		all = append(all, es...)
	}
	es, err := ruleExprs(rules)
	if err != nil {
		return err
	}
	all = append(all, es...)
	enc := json.NewEncoder(os.Stdout)
	for _, e := range all {
		if len(e.Selectors) == 0 {
			return fmt.Errorf("%s: no series selector found in %q", e.Source, e.Expr)
		}
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
