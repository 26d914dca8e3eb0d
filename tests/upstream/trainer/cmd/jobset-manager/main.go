// JobSet's controllers (JobSet, and the Pod reconciler behind exclusive placement) and its
// admission webhooks, for the upstream test tier; Trainer v2 reconciles TrainJobs into JobSets.
//
// How this differs from upstream's main.go (module root): upstream rotates the webhook certificate
// itself by default (cert-controller writes a Secret and patches the webhook configurations named
// after its in-cluster Service) and serves metrics over TLS. Here the harness hands over a
// certificate for 127.0.0.1 and registers the webhooks by URL, so this main starts the same
// indexes, controllers and webhooks from the default Configuration without the rotation. The
// webhook address, certificate directory and probe address come from flags; metrics are off and
// there is no leader election (one replica).
package main

import (
	"flag"
	"os"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	configapi "sigs.k8s.io/jobset/api/config/v1alpha1"
	jobset "sigs.k8s.io/jobset/api/jobset/v1alpha2"
	"sigs.k8s.io/jobset/pkg/config"
	"sigs.k8s.io/jobset/pkg/controllers"
	"sigs.k8s.io/jobset/pkg/webhooks"
)

func main() {
	var metricsAddr, probeAddr, webhookHost, certDir string
	var webhookPort int
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address; 0 turns metrics off")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "127.0.0.1:0", "healthz/readyz address")
	flag.StringVar(&webhookHost, "webhook-host", "127.0.0.1", "address the webhook server listens on")
	flag.IntVar(&webhookPort, "webhook-server-port", 9443, "port of the webhook server")
	flag.StringVar(&certDir, "webhook-cert-dir", "", "directory with tls.crt and tls.key for the webhook server")
	logOptions := zap.Options{Development: true, StacktraceLevel: zapcore.DPanicLevel}
	logOptions.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&logOptions)))
	setup := ctrl.Log.WithName("setup")
	fail := func(err error, msg string, kv ...any) {
		setup.Error(err, msg, kv...)
		os.Exit(1)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(jobset.AddToScheme(scheme))
	utilruntime.Must(configapi.AddToScheme(scheme))

	// The default Configuration, as upstream gets it without --config; then our overrides.
	options, cfg, err := config.Load(scheme, "")
	if err != nil {
		fail(err, "unable to load the default configuration")
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		fail(err, "unable to set the feature gates")
	}
	options.Metrics = metricsserver.Options{BindAddress: metricsAddr}
	options.WebhookServer = webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: certDir})
	options.HealthProbeBindAddress = probeAddr
	options.LeaderElection = false

	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS = *cfg.ClientConnection.QPS
	restConfig.Burst = int(*cfg.ClientConnection.Burst)
	mgr, err := ctrl.NewManager(restConfig, options)
	if err != nil {
		fail(err, "unable to create the manager")
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		fail(err, "unable to add the health check")
	}
	if err := mgr.AddReadyzCheck("readyz", mgr.GetWebhookServer().StartedChecker()); err != nil {
		fail(err, "unable to add the ready check")
	}

	ctx := ctrl.SetupSignalHandler()
	if err := controllers.SetupJobSetIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		fail(err, "unable to set up the JobSet indexes")
	}
	if err := controllers.SetupPodIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		fail(err, "unable to set up the Pod indexes")
	}
	// The certificate is on disk before we start: controllers and webhooks are set up before
	// the manager starts, not in a goroutine waiting for cert rotation.
	if err := controllers.NewJobSetReconciler(mgr.GetClient(), mgr.GetScheme(),
		mgr.GetEventRecorder("jobset")).SetupWithManager(mgr); err != nil {
		fail(err, "unable to create the controller", "controller", "JobSet")
	}
	if err := controllers.NewPodReconciler(mgr.GetClient(), mgr.GetScheme(),
		mgr.GetEventRecorder("pod")).SetupWithManager(mgr); err != nil {
		fail(err, "unable to create the controller", "controller", "Pod")
	}
	if err := webhooks.Setup(mgr); err != nil {
		fail(err, "unable to set up the webhooks")
	}

	setup.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		fail(err, "manager stopped")
	}
}
