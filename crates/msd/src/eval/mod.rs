//! Evaluation: distances between sample sets — the 2-D histogram distance of the toy, and for
//! images the project's own feature network (a small CNN classifier), Fréchet distance, KID,
//! k-NN precision/recall and per-class accuracy of generated samples, each set scored as the
//! 8-bit images it would be saved as (`quantize`).

pub mod classifier;
pub mod fd;
pub mod hist2d;
pub mod kid;
pub mod prdc;
pub mod quantize;
pub mod report;

pub use classifier::{
    class_accuracy, train_classifier, Classifier, ClassifierConfig, ClassifierRecord,
    ClassifierTrainConfig,
};
pub use fd::{frechet_distance, frechet_distance_features, FeatureStats};
pub use hist2d::{hist_l1, Hist2d};
pub use kid::kid;
pub use prdc::precision_recall;
pub use quantize::{from_u8, quantize_u8, to_u8, QUANTIZATION};
pub use report::{
    balanced_labels, generate, generate_cached, image_metrics, per_class_table, raw_fd, EvalReport,
    FeatureNetInfo, ImageMetrics, MetricsConfig, Reference, ReferenceInfo, SeedsInfo, StudentEval,
    FEATURE_NET_KIND,
};
