// Katib v0.19.0's controller (experiment, suggestion and trial reconcilers) and its three
// webhooks (experiment validating and mutating, pod mutating), for the upstream test tier.
//
// Why this is not upstream's main (cmd/katib-controller/v1beta1):
//   - upstream serves the webhooks on the port from the KatibConfig, from the fixed directory
//     /tmp/cert, on every address, and waits for its cert generator to write a certificate into a
//     Secret behind a Service; here the harness hands over a self-signed certificate for
//     127.0.0.1 and registers the webhooks by URL, so host, port and certificate directory come
//     from flags and the cert generator is never started (the KatibConfig's certGenerator block
//     is ignored);
//   - the probe address comes from a flag and metrics are off unless asked for, so that several
//     test runs on one machine do not fight over upstream's fixed ports (:8080, :18080);
//   - leader election is off: one replica, one test cluster.
//
// Everything else is upstream's: the KatibConfig file's init.controller block sets the same
// viper keys the reconcilers read (suggestion implementation, security context injection, gRPC
// probe, trial resources), and the runtime block is read by the reconcilers and webhooks from
// the katib-config ConfigMap in the Katib namespace, as in a real install.
package main

import (
	"flag"
	"os"

	"github.com/spf13/viper"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	configv1beta1 "github.com/kubeflow/katib/pkg/apis/config/v1beta1"
	katibapis "github.com/kubeflow/katib/pkg/apis/controller"
	katibcontroller "github.com/kubeflow/katib/pkg/controller.v1beta1"
	"github.com/kubeflow/katib/pkg/controller.v1beta1/consts"
	"github.com/kubeflow/katib/pkg/util/v1beta1/katibconfig"
	katibwebhook "github.com/kubeflow/katib/pkg/webhook/v1beta1"
)

func main() {
	var configFile, metricsAddr, probeAddr, webhookHost, certDir string
	var webhookPort int
	flag.StringVar(&configFile, "katib-config", "", "KatibConfig file (its init block is used; the runtime block must be in the katib-config ConfigMap)")
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

	scheme := runtime.NewScheme()
	utilruntime.Must(katibapis.AddToScheme(scheme))
	utilruntime.Must(configv1beta1.AddToScheme(scheme))
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))

	initConfig, err := katibconfig.GetInitConfigData(scheme, configFile)
	if err != nil {
		setup.Error(err, "unable to read the KatibConfig", "file", configFile)
		os.Exit(1)
	}
	controllerConfig := initConfig.ControllerConfig
	trialKinds, err := katibconfig.TrialResourcesToGVKs(controllerConfig.TrialResources)
	if err != nil {
		setup.Error(err, "unable to parse trialResources", "trialResources", controllerConfig.TrialResources)
		os.Exit(1)
	}
	// The reconcilers read these through viper, as upstream's main leaves them.
	viper.Set(consts.ConfigExperimentSuggestionName, controllerConfig.ExperimentSuggestionName)
	viper.Set(consts.ConfigInjectSecurityContext, controllerConfig.InjectSecurityContext)
	viper.Set(consts.ConfigEnableGRPCProbeInSuggestion, controllerConfig.EnableGRPCProbeInSuggestion)
	viper.Set(consts.ConfigTrialResources, trialKinds)
	setup.Info("KatibConfig read", "file", configFile, "trialResources", controllerConfig.TrialResources,
		"suggestion", controllerConfig.ExperimentSuggestionName)

	hookServer := webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: certDir})
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
	})
	if err != nil {
		setup.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	if err := katibcontroller.AddToManager(mgr); err != nil {
		setup.Error(err, "unable to register the controllers")
		os.Exit(1)
	}
	// Adds the webhook server to the manager and registers the three handlers on it.
	if err := katibwebhook.AddToManager(mgr, hookServer); err != nil {
		setup.Error(err, "unable to register the webhooks")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setup.Error(err, "unable to add the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", hookServer.StartedChecker()); err != nil {
		setup.Error(err, "unable to add the ready check")
		os.Exit(1)
	}

	setup.Info("starting manager", "namespace", consts.DefaultKatibNamespace)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setup.Error(err, "manager stopped")
		os.Exit(1)
	}
}
