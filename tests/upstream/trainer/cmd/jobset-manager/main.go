// JobSet's controllers (JobSet, and the Pod reconciler behind exclusive placement) and its
// admission webhooks, for the upstream test tier; Trainer v2 reconciles TrainJobs into JobSets.
//
// How this differs from upstream's main.go (module root): upstream rotates the webhook certificate
// itself by default (cert-controller writes a Secret and patches the webhook configurations named
// after its in-cluster Service) and serves metrics over TLS. Here the harness hands over a
// certificate for 127.0.0.1 and registers the webhooks by URL, so this main starts the same
// indexes, controllers and webhooks from the default Configuration without the rotation, set up
// before the manager starts rather than after certificates are ready. The webhook address,
// certificate directory and probe address come from flags (localmanager); metrics are off and
// there is no leader election.
package main

import (
	"flag"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"

	configapi "sigs.k8s.io/jobset/api/config/v1alpha1"
	jobset "sigs.k8s.io/jobset/api/jobset/v1alpha2"
	"sigs.k8s.io/jobset/pkg/config"
	"sigs.k8s.io/jobset/pkg/controllers"
	"sigs.k8s.io/jobset/pkg/webhooks"

	"traindeploy.io/tests/upstream/trainer/internal/localmanager"
)

func main() {
	flags := localmanager.Bind()
	flag.Parse()
	setup := flags.Logger()

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(jobset.AddToScheme(scheme))
	utilruntime.Must(configapi.AddToScheme(scheme))

	// The default Configuration, as upstream gets it without --config; then our flags.
	options, cfg, err := config.Load(scheme, "")
	if err != nil {
		localmanager.Exit(setup, err, "unable to load the default configuration")
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		localmanager.Exit(setup, err, "unable to set the feature gates")
	}
	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS = *cfg.ClientConnection.QPS
	restConfig.Burst = int(*cfg.ClientConnection.Burst)
	mgr := flags.NewManager(setup, restConfig, options)

	ctx := ctrl.SetupSignalHandler()
	if err := controllers.SetupJobSetIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		localmanager.Exit(setup, err, "unable to set up the JobSet indexes")
	}
	if err := controllers.SetupPodIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		localmanager.Exit(setup, err, "unable to set up the Pod indexes")
	}
	if err := controllers.NewJobSetReconciler(mgr.GetClient(), mgr.GetScheme(),
		mgr.GetEventRecorder("jobset")).SetupWithManager(mgr); err != nil {
		localmanager.Exit(setup, err, "unable to create the controller", "controller", "JobSet")
	}
	if err := controllers.NewPodReconciler(mgr.GetClient(), mgr.GetScheme(),
		mgr.GetEventRecorder("pod")).SetupWithManager(mgr); err != nil {
		localmanager.Exit(setup, err, "unable to create the controller", "controller", "Pod")
	}
	if err := webhooks.Setup(mgr); err != nil {
		localmanager.Exit(setup, err, "unable to set up the webhooks")
	}

	setup.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		localmanager.Exit(setup, err, "manager stopped")
	}
}
