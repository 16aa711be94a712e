package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files under test, from this package's directory.
const (
	dashboardFile  = "../grafana/dashboards/kbatch.json"
	datasourceFile = "../grafana/provisioning/datasources/prometheus.yml"
	providerFile   = "../grafana/provisioning/dashboards/kbatch.yml"
	rulesFile      = "../prometheus/alerts.yml"
	rulesTestFile  = "../prometheus/alerts_test.yml"
	prometheusFile = "../prometheus/prometheus.yml"
	composeFile    = "../../docker-compose.yml"
)

// knownMetrics are the series a kbatch service exports: the consumer's
// (metrics.NewCollector, kbatch_*), franz-go's kprom plugin under the
// namespace kbatch_client, and Prometheus's own up. A dashboard or rule
// reading anything else reads a typo, which the live check could only
// report as "no data".
var knownMetrics = func() map[string]bool {
	m := map[string]bool{"up": true}
	for _, n := range []string{
		"records_total", "batches_total", "handler_errors_total", "commits_total", "commit_errors_total",
		"rebalances_total", "partitions_assigned_total", "partitions_revoked_total", "partitions_lost_total",
		"fetch_pauses_total", "skipped_total", "dead_lettered_total", "dead_letter_errors_total", "store_errors_total",
		"buffered_records", "buffered_bytes", "owned_partitions", "ready", "flushes_total",
		"missing_topics", "fetch_errors_total", "abandoned_workers_total", "fetch_max_bytes",
		"partition_lag_records", "partition_lag_seconds", "partition_stalled_seconds",
		"client_fetch_bytes_total", "client_produce_bytes_total", "client_read_bytes_total", "client_write_bytes_total",
		"client_connects_total", "client_connect_errors_total", "client_buffered_fetch_records_total",
	} {
		m["kbatch_"+n] = true
	}
	for _, h := range []string{"handler_duration_seconds", "batch_records", "batch_bytes", "record_age_seconds", "commit_duration_seconds"} {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			m["kbatch_"+h+suffix] = true
		}
	}
	return m
}()

// metricName is the metric a selector reads.
var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)

func allExprs(t *testing.T) []Expr {
	t.Helper()
	d, err := dashboardExprs(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ruleExprs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	return append(d, r...)
}

// Guards against a panel or a rule reading a misspelt or removed metric.
func TestEveryExpressionReadsAKnownMetric(t *testing.T) {
	for _, e := range allExprs(t) {
		if len(e.Selectors) == 0 {
			t.Errorf("%s: no series selector in %q", e.Source, e.Expr)
		}
		for _, s := range e.Selectors {
			if n := metricName.FindString(s); !knownMetrics[n] {
				t.Errorf("%s: reads %q, which no kbatch service exports", e.Source, s)
			}
		}
	}
}

// The on-call questions the dashboard must answer, each with a metric that
// answers it.
func TestDashboardAnswersTheOnCallQuestions(t *testing.T) {
	read := map[string]bool{}
	exprs, err := dashboardExprs(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exprs {
		for _, s := range e.Selectors {
			read[metricName.FindString(s)] = true
		}
	}
	for question, metric := range map[string]string{
		"how far behind, in records":         "kbatch_partition_lag_records",
		"how far behind, in time":            "kbatch_partition_lag_seconds",
		"which partition is stuck":           "kbatch_partition_stalled_seconds",
		"how fast":                           "kbatch_records_total",
		"how long a batch takes":             "kbatch_handler_duration_seconds_bucket",
		"how long a commit takes":            "kbatch_commit_duration_seconds_bucket",
		"why batches are cut":                "kbatch_flushes_total",
		"are handlers failing":               "kbatch_handler_errors_total",
		"are commits failing":                "kbatch_commit_errors_total",
		"are records being dead-lettered":    "kbatch_dead_lettered_total",
		"are dead-letter writes failing":     "kbatch_dead_letter_errors_total",
		"does every topic exist":             "kbatch_missing_topics",
		"can the members fetch":              "kbatch_fetch_errors_total",
		"is every member up":                 "up",
		"is every member ready":              "kbatch_ready",
		"who owns which share of partitions": "kbatch_owned_partitions",
	} {
		if !read[metric] {
			t.Errorf("no panel answers %q (reads %s)", question, metric)
		}
	}
}

// Guards the dashboard's shape: Grafana shows a panel whose datasource uid
// it does not know as broken, overlapping grid positions as a jumble, and
// duplicate ids make it drop panels.
func TestDashboardPanelsFitAndUseTheProvisionedDatasource(t *testing.T) {
	d, err := readDashboard(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
		} `yaml:"datasources"`
	}
	readYAML(t, datasourceFile, &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Fatalf("%s: want one prometheus datasource, got %+v", datasourceFile, ds.Datasources)
	}
	uid := ds.Datasources[0].UID
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard has no uid or title")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: grid position %+v is outside the 24 columns", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Description == "" {
			t.Errorf("panel %d has no title or description", p.ID)
		}
		if p.Datasource.UID != uid {
			t.Errorf("panel %q: datasource uid %q, the provisioned one is %q", p.Title, p.Datasource.UID, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != uid {
				t.Errorf("panel %q target %s: datasource uid %q, want %q", p.Title, tg.RefID, tg.Datasource.UID, uid)
			}
		}
	}
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, providerFile, &prov)
	if len(prov.Providers) != 1 {
		t.Fatalf("%s: want one dashboard provider", providerFile)
	}
	if !mounted(t, "grafana", "./deploy/grafana/dashboards", prov.Providers[0].Options.Path) {
		t.Errorf("the provider reads %s, where docker-compose.yml does not mount deploy/grafana/dashboards", prov.Providers[0].Options.Path)
	}
}

// The four failures on-call must hear about, each alert labelled and
// explained, and each covered by a promtool test case.
func TestAlertsCoverTheFailuresAndAreTested(t *testing.T) {
	f, err := readRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name (recording rules belong elsewhere)", g.Name)
				continue
			}
			names = append(names, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description", r.Alert)
			}
			if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
				t.Errorf("%s has no case in %s", r.Alert, rulesTestFile)
			}
		}
	}
	for _, want := range []string{"KbatchLagGrowing", "KbatchPartitionStuck", "KbatchDeadLetters", "KbatchConsumerDown"} {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

// Guards the wiring between the files: the rules select job "kbatch", so
// Prometheus must scrape a job of that name and load the rules, and the
// compose file must mount both where the config expects them.
func TestPrometheusLoadsTheRulesAndScrapesTheJobTheySelect(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, prometheusFile, &cfg)
	if !slices.Contains(cfg.RuleFiles, "alerts.yml") {
		t.Errorf("%s does not load alerts.yml: %v", prometheusFile, cfg.RuleFiles)
	}
	var jobs []string
	for _, s := range cfg.ScrapeConfigs {
		jobs = append(jobs, s.JobName)
	}
	if !slices.Contains(jobs, "kbatch") {
		t.Errorf("%s has no job kbatch (jobs %v)", prometheusFile, jobs)
	}
	for src, dst := range map[string]string{
		"./deploy/prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
		"./deploy/prometheus/alerts.yml":     "/etc/prometheus/alerts.yml",
	} {
		if !mounted(t, "prometheus", src, dst) {
			t.Errorf("docker-compose.yml does not mount %s at %s", src, dst)
		}
	}
}

// docker-compose config accepts a bind mount or a Dockerfile that does not
// exist; this does not.
func TestComposeFilesExist(t *testing.T) {
	c := readCompose(t)
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
		if s.Build != nil {
			df := filepath.Join("../..", s.Build.Context, s.Build.Dockerfile)
			b, err := os.ReadFile(df)
			if err != nil {
				t.Errorf("service %s: %v", name, err)
				continue
			}
			if !strings.Contains(string(b), " AS "+s.Build.Target+"\n") {
				t.Errorf("service %s: %s has no stage %q", name, df, s.Build.Target)
			}
		}
	}
	for _, want := range []string{"kafka", "prometheus", "grafana", "orders-etl", "loadgen"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("docker-compose.yml has no service %s", want)
		}
	}
}

type compose struct {
	Services map[string]struct {
		Volumes []string `yaml:"volumes"`
		Build   *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
			Target     string `yaml:"target"`
		} `yaml:"build"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	var c compose
	readYAML(t, composeFile, &c)
	return c
}

// mounted reports whether service mounts src at dst.
func mounted(t *testing.T, service, src, dst string) bool {
	t.Helper()
	for _, v := range readCompose(t).Services[service].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[0] == src && parts[1] == dst {
			return true
		}
	}
	return false
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
