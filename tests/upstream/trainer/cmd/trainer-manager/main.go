// Kubeflow Trainer v2's controllers (TrainJob, TrainingRuntime, ClusterTrainingRuntime) and its
// admission webhooks, for the upstream test tier.
//
// How this differs from upstream's cmd/trainer-controller-manager: upstream reads a Configuration
// file and, by default, rotates the webhook certificate itself (cert-controller writes a Secret and
// patches the webhook configurations named after its in-cluster Service). Here the harness hands
// over a certificate for 127.0.0.1 and registers the webhooks by URL, so this main starts the same
// runtimes, controllers and webhooks from the default Configuration without the rotation. The
// webhook address, certificate directory and probe address come from flags; metrics are off, there
// is no leader election (one replica), and the TrainJobStatus server stays behind its feature gate.
package main

import (
	"flag"
	"os"

	"go.uber.org/zap/zapcore"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	jobsetv1alpha2 "sigs.k8s.io/jobset/api/jobset/v1alpha2"
	schedulerpluginsv1alpha1 "sigs.k8s.io/scheduler-plugins/apis/scheduling/v1alpha1"
	volcanov1beta1 "volcano.sh/apis/pkg/apis/scheduling/v1beta1"

	configapi "github.com/kubeflow/trainer/v2/pkg/apis/config/v1alpha1"
	trainer "github.com/kubeflow/trainer/v2/pkg/apis/trainer/v1alpha1"
	"github.com/kubeflow/trainer/v2/pkg/config"
	"github.com/kubeflow/trainer/v2/pkg/controller"
	runtimecore "github.com/kubeflow/trainer/v2/pkg/runtime/core"
	"github.com/kubeflow/trainer/v2/pkg/webhooks"
)

func main() {
	var metricsAddr, probeAddr, webhookHost, certDir, featureGates string
	var webhookPort int
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address; 0 turns metrics off")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "127.0.0.1:0", "healthz/readyz address")
	flag.StringVar(&webhookHost, "webhook-host", "127.0.0.1", "address the webhook server listens on")
	flag.IntVar(&webhookPort, "webhook-server-port", 9443, "port of the webhook server")
	flag.StringVar(&certDir, "webhook-cert-dir", "", "directory with tls.crt and tls.key for the webhook server")
	flag.StringVar(&featureGates, "feature-gates", "", "Trainer feature gates, key=value,...")
	logOptions := zap.Options{Development: true, StacktraceLevel: zapcore.DPanicLevel}
	logOptions.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&logOptions)))
	setup := ctrl.Log.WithName("setup")
	fail := func(err error, msg string, kv ...any) {
		setup.Error(err, msg, kv...)
		os.Exit(1)
	}

	// The scheme upstream's manager registers: the runtimes' plugins read JobSets and, when their
	// CRDs are installed, gang-scheduling PodGroups.
	scheme := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(configapi.AddToScheme(scheme))
	utilruntime.Must(trainer.AddToScheme(scheme))
	utilruntime.Must(jobsetv1alpha2.AddToScheme(scheme))
	utilruntime.Must(schedulerpluginsv1alpha1.AddToScheme(scheme))
	utilruntime.Must(volcanov1beta1.AddToScheme(scheme))

	// The default Configuration, as upstream gets it without --config; then our overrides.
	options, cfg, err := config.Load(scheme, "")
	if err != nil {
		fail(err, "unable to load the default configuration")
	}
	if featureGates != "" {
		if err := utilfeature.DefaultMutableFeatureGate.Set(featureGates); err != nil {
			fail(err, "unable to set the feature gates")
		}
	}
	options.Metrics = metricsserver.Options{BindAddress: metricsAddr}
	options.WebhookServer = webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: certDir})
	options.HealthProbeBindAddress = probeAddr
	options.LeaderElection = false

	restConfig := ctrl.GetConfigOrDie()
	config.ApplyClientConnection(restConfig, &cfg)
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
	runtimes, err := runtimecore.New(ctx, mgr.GetClient(), mgr.GetFieldIndexer(), &cfg)
	if err != nil {
		fail(err, "unable to initialise the runtimes")
	}
	// The certificate is on disk before we start, so there is nothing to wait for: the
	// controllers and webhooks are set up before the manager starts, not in a goroutine.
	if name, err := controller.SetupControllers(mgr, runtimes, ctrlcontroller.Options{}); err != nil {
		fail(err, "unable to create the controller", "controller", name)
	}
	if name, err := webhooks.Setup(mgr, runtimes); err != nil {
		fail(err, "unable to create the webhook", "webhook", name)
	}

	setup.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		fail(err, "manager stopped")
	}
}
