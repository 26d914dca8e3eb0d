// The Training Operator v1's PyTorchJob controller and validating webhook, for the upstream
// test tier. Upstream's main (cmd/training-operator.v1) also rotates the webhook certificate
// through a Secret and a Service; here the harness hands over a certificate for 127.0.0.1 and
// registers the webhook by URL, so this main starts the same reconciler and webhook without it.
package main

import (
	"flag"
	"os"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/flowcontrol"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	schedulerpluginsv1alpha1 "sigs.k8s.io/scheduler-plugins/apis/scheduling/v1alpha1"
	volcanov1beta1 "volcano.sh/apis/pkg/apis/scheduling/v1beta1"

	kubeflowv1 "github.com/kubeflow/training-operator/pkg/apis/kubeflow.org/v1"
	"github.com/kubeflow/training-operator/pkg/config"
	controllerv1 "github.com/kubeflow/training-operator/pkg/controller.v1"
	"github.com/kubeflow/training-operator/pkg/controller.v1/common"
	"github.com/kubeflow/training-operator/pkg/webhooks"
)

func main() {
	var metricsAddr, probeAddr, webhookHost, certDir string
	var webhookPort, threads, qps, burst int
	var schemes controllerv1.EnabledSchemes
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address; 0 turns metrics off")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "127.0.0.1:0", "healthz/readyz address")
	flag.StringVar(&webhookHost, "webhook-host", "127.0.0.1", "address the webhook server listens on")
	flag.IntVar(&webhookPort, "webhook-server-port", 9443, "port of the webhook server")
	flag.StringVar(&certDir, "webhook-cert-dir", "", "directory with tls.crt and tls.key for the webhook server")
	flag.Var(&schemes, "enable-scheme", "job kind to reconcile (repeatable), e.g. pytorchjob")
	flag.IntVar(&threads, "controller-threads", 1, "worker threads per controller")
	flag.IntVar(&qps, "kube-api-qps", 20, "client QPS")
	flag.IntVar(&burst, "kube-api-burst", 30, "client burst")
	// The same defaults upstream's flags give the PyTorch init container of Worker pods.
	flag.StringVar(&config.Config.PyTorchInitContainerImage, "pytorch-init-container-image",
		config.PyTorchInitContainerImageDefault, "image of the init container that waits for the master")
	flag.StringVar(&config.Config.PyTorchInitContainerTemplateFile, "pytorch-init-container-template-file",
		config.PyTorchInitContainerTemplateFileDefault, "template of that init container")
	flag.IntVar(&config.Config.PyTorchInitContainerMaxTries, "pytorch-init-container-max-tries",
		config.PyTorchInitContainerMaxTriesDefault, "tries of that init container")
	config.Config.MPIKubectlDeliveryImage = config.MPIKubectlDeliveryImageDefault
	logOptions := zap.Options{Development: true, StacktraceLevel: zapcore.DPanicLevel}
	logOptions.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&logOptions)))
	setup := ctrl.Log.WithName("setup")

	// The scheme upstream's manager registers, gang-scheduling PodGroups included.
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kubeflowv1.AddToScheme(scheme))
	utilruntime.Must(volcanov1beta1.AddToScheme(scheme))
	utilruntime.Must(schedulerpluginsv1alpha1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(float32(qps), burst)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		WebhookServer:          webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: certDir}),
		HealthProbeBindAddress: probeAddr,
	})
	if err != nil {
		setup.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setup.Error(err, "unable to add the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", mgr.GetWebhookServer().StartedChecker()); err != nil {
		setup.Error(err, "unable to add the ready check")
		os.Exit(1)
	}

	if schemes.Empty() {
		schemes.FillAll()
	}
	for _, kind := range schemes {
		reconciler := controllerv1.SupportedSchemeReconciler[kind]
		if err := reconciler(mgr, common.GenNonGangSchedulerSetupFunc(), threads); err != nil {
			setup.Error(err, "unable to create the controller", "scheme", kind)
			os.Exit(1)
		}
		if register, ok := webhooks.SupportedSchemeWebhook[kind]; ok {
			if err := register(mgr); err != nil {
				setup.Error(err, "unable to register the webhook", "scheme", kind)
				os.Exit(1)
			}
		}
	}

	setup.Info("starting manager", "schemes", schemes.String())
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setup.Error(err, "manager stopped")
		os.Exit(1)
	}
}
