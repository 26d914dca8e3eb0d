// Package localmanager is what this module's two mains do alike to run an upstream manager on
// the test tier's control plane: flags that put the webhook server, its certificate and the
// probes on 127.0.0.1 (metrics off), the logger, and the health checks. Upstream's mains read a
// Configuration file and rotate the webhook certificate in-cluster; each main says what it keeps.
package localmanager

import (
	"flag"
	"os"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Flags are the settings the harness passes to every manager of this module.
type Flags struct {
	metricsAddr, probeAddr, webhookHost, certDir string
	webhookPort                                  int
	logOptions                                   zap.Options
}

// Bind defines the flags on the command line; call flag.Parse afterwards.
func Bind() *Flags {
	f := &Flags{logOptions: zap.Options{Development: true, StacktraceLevel: zapcore.DPanicLevel}}
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", "0", "metrics address; 0 turns metrics off")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", "127.0.0.1:0", "healthz/readyz address")
	flag.StringVar(&f.webhookHost, "webhook-host", "127.0.0.1", "address the webhook server listens on")
	flag.IntVar(&f.webhookPort, "webhook-server-port", 9443, "port of the webhook server")
	flag.StringVar(&f.certDir, "webhook-cert-dir", "", "directory with tls.crt and tls.key for the webhook server")
	f.logOptions.BindFlags(flag.CommandLine)
	return f
}

// Logger sets controller-runtime's logger from the parsed flags and returns the setup logger.
func (f *Flags) Logger() logr.Logger {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.logOptions)))
	return ctrl.Log.WithName("setup")
}

// NewManager makes the manager from the options upstream's default configuration produced,
// with the flags put in: metrics, the webhook server (with our certificate directory), the probe
// address, and no leader election (one replica). It adds healthz, and readyz once the webhook
// server serves: the certificate is on disk before the manager starts, so there is no
// certificate rotation to wait for. It ends the process on an error.
func (f *Flags) NewManager(log logr.Logger, restConfig *rest.Config, options ctrl.Options) ctrl.Manager {
	options.Metrics = metricsserver.Options{BindAddress: f.metricsAddr}
	options.WebhookServer = webhook.NewServer(webhook.Options{Host: f.webhookHost, Port: f.webhookPort, CertDir: f.certDir})
	options.HealthProbeBindAddress = f.probeAddr
	options.LeaderElection = false
	mgr, err := ctrl.NewManager(restConfig, options)
	if err != nil {
		Exit(log, err, "unable to create the manager")
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		Exit(log, err, "unable to add the health check")
	}
	if err := mgr.AddReadyzCheck("readyz", mgr.GetWebhookServer().StartedChecker()); err != nil {
		Exit(log, err, "unable to add the ready check")
	}
	return mgr
}

// Exit logs err with msg and ends the process.
func Exit(log logr.Logger, err error, msg string, keysAndValues ...any) {
	log.Error(err, msg, keysAndValues...)
	os.Exit(1)
}
