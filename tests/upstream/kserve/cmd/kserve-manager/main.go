// KServe v0.20.0's InferenceService controller and its admission webhooks, for the upstream test
// tier, in Standard (RawDeployment) mode.
//
// How this differs from upstream's main (cmd/manager/main.go at v0.20.0), and why:
//   - the webhook server listens on a host, port and certificate directory given by flags: the
//     harness hands over a self-signed certificate for 127.0.0.1 and registers the webhooks by
//     URL, where upstream relies on cert-manager and a Service in the cluster;
//   - only the InferenceService reconciler runs, with the webhooks it depends on (the ISVC
//     defaulter and validator, and the pod mutator that injects the storage initializer); the
//     TrainedModel and InferenceGraph controllers and the ServingRuntime, TrainedModel and
//     InferenceGraph validators serve nothing TrainDeploy creates;
//   - no leader election, and metrics off unless asked for: one short-lived process per test
//     session.
// Everything it does to an InferenceService is upstream's own code.
package main

import (
	"context"
	"flag"
	"net/http"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	isvccontroller "github.com/kserve/kserve/pkg/controller/v1beta1/inferenceservice"
	kservescheme "github.com/kserve/kserve/pkg/scheme"
	"github.com/kserve/kserve/pkg/webhook/admission/pod"
)

func main() {
	var metricsAddr, probeAddr, webhookHost, certDir string
	var webhookPort int
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address; 0 turns metrics off")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "127.0.0.1:0", "healthz/readyz address")
	flag.StringVar(&webhookHost, "webhook-host", "127.0.0.1", "address the webhook server listens on")
	flag.IntVar(&webhookPort, "webhook-server-port", 9443, "port of the webhook server")
	flag.StringVar(&certDir, "webhook-cert-dir", "", "directory with tls.crt and tls.key for the webhook server")
	logOptions := zap.Options{}
	logOptions.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&logOptions)))
	setup := ctrl.Log.WithName("setup")
	fail := func(err error, what string) {
		setup.Error(err, what)
		os.Exit(1)
	}

	cfg := ctrl.GetConfigOrDie()
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail(err, "unable to create the clientset")
	}
	// Upstream's cache options: only pods labelled as an InferenceService's are cached.
	cacheOptions, err := isvccontroller.NewCacheOptions()
	if err != nil {
		fail(err, "unable to build the cache options")
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		WebhookServer:          webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: certDir}),
		HealthProbeBindAddress: probeAddr,
		Cache:                  cacheOptions,
	})
	if err != nil {
		fail(err, "unable to create the manager")
	}
	if err := kservescheme.AddAll(mgr.GetScheme()); err != nil {
		fail(err, "unable to register the API schemes")
	}

	// The inferenceservice-config ConfigMap in $POD_NAMESPACE (default "kserve"), read once at
	// start as upstream does; the harness writes it before starting this binary.
	configMap, err := v1beta1.GetInferenceServiceConfigMap(context.Background(), clientset)
	if err != nil {
		fail(err, "unable to read the inferenceservice-config ConfigMap")
	}
	deployConfig, err := v1beta1.NewDeployConfig(configMap)
	if err != nil {
		fail(err, "unable to parse the deploy config")
	}
	ingressConfig, err := v1beta1.NewIngressConfig(configMap)
	if err != nil {
		fail(err, "unable to parse the ingress config")
	}
	// Parsed for its side effect, as upstream does: it registers custom GPU resource names.
	if _, err := v1beta1.NewMultiNodeConfig(configMap); err != nil {
		fail(err, "unable to parse the multiNode config")
	}

	events := record.NewBroadcaster()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clientset.CoreV1().Events("")})
	reconciler := &isvccontroller.InferenceServiceReconciler{
		Client:    mgr.GetClient(),
		Clientset: clientset,
		Log:       ctrl.Log.WithName("v1beta1Controllers").WithName("InferenceService"),
		Scheme:    mgr.GetScheme(),
		Recorder:  events.NewRecorder(mgr.GetScheme(), corev1.EventSource{Component: "v1beta1Controllers"}),
	}
	if err := reconciler.SetupWithManager(mgr, deployConfig, ingressConfig); err != nil {
		fail(err, "unable to set up the InferenceService controller")
	}

	hooks := mgr.GetWebhookServer()
	// The pod mutator: storage initializer, agent and batcher injection for predictor pods.
	hooks.Register("/mutate-pods", &webhook.Admission{Handler: &pod.Mutator{
		Client: mgr.GetClient(), Clientset: clientset, Decoder: admission.NewDecoder(mgr.GetScheme())}})
	if err := ctrl.NewWebhookManagedBy(mgr).
		For(&v1beta1.InferenceService{}).
		WithDefaulter(&v1beta1.InferenceServiceDefaulter{}).
		WithValidator(&v1beta1.InferenceServiceValidator{}).
		Complete(); err != nil {
		fail(err, "unable to set up the InferenceService webhooks")
	}

	started := func(req *http.Request) error { return hooks.StartedChecker()(req) }
	if err := mgr.AddHealthzCheck("healthz", started); err != nil {
		fail(err, "unable to add the health check")
	}
	if err := mgr.AddReadyzCheck("readyz", started); err != nil {
		fail(err, "unable to add the ready check")
	}

	setup.Info("starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fail(err, "manager stopped")
	}
}
