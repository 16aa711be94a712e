package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Expr is one PromQL expression kept in the repository.
type Expr struct {
	// Kind is "dashboard" or "alert".
	Kind string `json:"kind"`
	// Source names where it is: the dashboard file, panel and target, or
	// the rules file and alert.
	Source string `json:"source"`
	Expr   string `json:"expr"`
	// Selectors are the expression's series selectors, e.g.
	// `up{job="kbatch"}`: what must exist for the expression to have data.
	Selectors []string `json:"selectors"`
}

// dashboard is the part of a Grafana dashboard JSON these checks read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int        `json:"id"`
	Type        string     `json:"type"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Datasource  datasource `json:"datasource"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's panels
}

type target struct {
	RefID      string     `json:"refId"`
	Expr       string     `json:"expr"`
	Datasource datasource `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// readDashboard parses a dashboard file.
func readDashboard(path string) (*dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

// allPanels returns the panels of d, those inside rows included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// dashboardExprs returns every target expression of the dashboard at path.
func dashboardExprs(path string) ([]Expr, error) {
	d, err := readDashboard(path)
	if err != nil {
		return nil, err
	}
	var out []Expr
	for _, p := range d.allPanels() {
		for _, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" {
				return nil, fmt.Errorf("%s: panel %q target %s has no expression", path, p.Title, t.RefID)
			}
			out = append(out, Expr{
				Kind:      "dashboard",
				Source:    fmt.Sprintf("%s: panel %q target %s", path, p.Title, t.RefID),
				Expr:      t.Expr,
				Selectors: selectors(t.Expr),
			})
		}
	}
	return out, nil
}

// ruleFile is a Prometheus rules file.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readRules(path string) (*ruleFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// ruleExprs returns the expression of every rule in the file at path.
func ruleExprs(path string) ([]Expr, error) {
	f, err := readRules(path)
	if err != nil {
		return nil, err
	}
	var out []Expr
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			e := strings.TrimSpace(r.Expr)
			out = append(out, Expr{
				Kind:      "alert",
				Source:    fmt.Sprintf("%s: group %s rule %s", path, g.Name, name),
				Expr:      e,
				Selectors: selectors(e),
			})
		}
	}
	return out, nil
}
