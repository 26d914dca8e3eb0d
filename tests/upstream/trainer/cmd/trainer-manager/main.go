// Kubeflow Trainer v2's controllers (TrainJob, TrainingRuntime, ClusterTrainingRuntime) and its
// admission webhooks, for the upstream test tier.
//
// How this differs from upstream's cmd/trainer-controller-manager: upstream reads a Configuration
// file and, by default, rotates the webhook certificate itself (cert-controller writes a Secret and
// patches the webhook configurations named after its in-cluster Service). Here the harness hands
// over a certificate for 127.0.0.1 and registers the webhooks by URL, so this main starts the same
// runtimes, controllers and webhooks from the default Configuration without the rotation, set up
// before the manager starts rather than after certificates are ready. The webhook address,
// certificate directory and probe address come from flags (localmanager); metrics are off, there
// is no leader election, and the TrainJobStatus server stays behind its feature gate (off).
package main

import (
	"flag"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	jobsetv1alpha2 "sigs.k8s.io/jobset/api/jobset/v1alpha2"
	schedulerpluginsv1alpha1 "sigs.k8s.io/scheduler-plugins/apis/scheduling/v1alpha1"
	volcanov1beta1 "volcano.sh/apis/pkg/apis/scheduling/v1beta1"

	configapi "github.com/kubeflow/trainer/v2/pkg/apis/config/v1alpha1"
	trainer "github.com/kubeflow/trainer/v2/pkg/apis/trainer/v1alpha1"
	"github.com/kubeflow/trainer/v2/pkg/config"
	"github.com/kubeflow/trainer/v2/pkg/controller"
	runtimecore "github.com/kubeflow/trainer/v2/pkg/runtime/core"
	"github.com/kubeflow/trainer/v2/pkg/webhooks"

	"traindeploy.io/tests/upstream/trainer/internal/localmanager"
)

func main() {
	flags := localmanager.Bind()
	var featureGates string
	flag.StringVar(&featureGates, "feature-gates", "", "Trainer feature gates, key=value,...")
	flag.Parse()
	setup := flags.Logger()

	// The scheme upstream's manager registers: the runtimes' plugins read JobSets and, when their
	// CRDs are installed, gang-scheduling PodGroups.
	scheme := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(configapi.AddToScheme(scheme))
	utilruntime.Must(trainer.AddToScheme(scheme))
	utilruntime.Must(jobsetv1alpha2.AddToScheme(scheme))
	utilruntime.Must(schedulerpluginsv1alpha1.AddToScheme(scheme))
	utilruntime.Must(volcanov1beta1.AddToScheme(scheme))

	// The default Configuration, as upstream gets it without --config; then our flags.
	options, cfg, err := config.Load(scheme, "")
	if err != nil {
		localmanager.Exit(setup, err, "unable to load the default configuration")
	}
	if featureGates != "" {
		if err := utilfeature.DefaultMutableFeatureGate.Set(featureGates); err != nil {
			localmanager.Exit(setup, err, "unable to set the feature gates")
		}
	}
	restConfig := ctrl.GetConfigOrDie()
	config.ApplyClientConnection(restConfig, &cfg)
	mgr := flags.NewManager(setup, restConfig, options)

	ctx := ctrl.SetupSignalHandler()
	runtimes, err := runtimecore.New(ctx, mgr.GetClient(), mgr.GetFieldIndexer(), &cfg)
	if err != nil {
		localmanager.Exit(setup, err, "unable to initialise the runtimes")
	}
	if name, err := controller.SetupControllers(mgr, runtimes, ctrlcontroller.Options{}); err != nil {
		localmanager.Exit(setup, err, "unable to create the controller", "controller", name)
	}
	if name, err := webhooks.Setup(mgr, runtimes); err != nil {
		localmanager.Exit(setup, err, "unable to create the webhook", "webhook", name)
	}

	setup.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		localmanager.Exit(setup, err, "manager stopped")
	}
}
