//! A bundle routes every condition to its owner, evaluates each student once per request, returns
//! outputs in request order, and refuses inconsistent manifests.

mod common;

use msd::bundle::Bundle;
use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::partition::Partition;
use tch::{Device, Kind, Tensor};

fn student(seed: i64) -> EdmModel {
    tch::manual_seed(seed);
    EdmModel::new(
        &common::mlp(6, 16, 1, 4),
        EdmPrecond::default(),
        Device::Cpu,
    )
}

#[test]
fn mixed_requests_are_split_by_student_and_returned_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = Partition::contiguous(6, 3);
    let mut dirs = vec![];
    for k in 0..3 {
        let d = dir.path().join(format!("s{k}"));
        student(k as i64 + 10).save_dir(&d).unwrap();
        dirs.push(d);
    }
    let path = dir.path().join("bundle.json");
    Bundle::assemble(&path, &p, &dirs, None, 80.0).unwrap();
    let b = Bundle::load(&path, Device::Cpu).unwrap();
    let labels = vec![5i64, 0, 3, 1, 4, 2, 5];
    let z = Tensor::randn([7, 2], (Kind::Float, Device::Cpu));
    let (x, owners) = b.generate(&labels, &z).unwrap();
    assert_eq!(owners, vec![2, 0, 1, 0, 2, 1, 2]);
    for (i, (&c, &k)) in labels.iter().zip(&owners).enumerate() {
        let direct =
            b.students[k].generate(&z.narrow(0, i as i64, 1), &Tensor::from_slice(&[c]), 80.0);
        assert!(
            x.narrow(0, i as i64, 1)
                .allclose(&direct, 1e-5, 1e-6, false),
            "sample {i} (class {c}) not from student {k}"
        );
        // And not what another student would have produced.
        let other = b.students[(k + 1) % 3].generate(
            &z.narrow(0, i as i64, 1),
            &Tensor::from_slice(&[c]),
            80.0,
        );
        assert!(!x.narrow(0, i as i64, 1).allclose(&other, 1e-5, 1e-6, false));
    }
    assert!(
        b.generate(&[6], &z.narrow(0, 0, 1)).is_err(),
        "unknown class must be refused"
    );
}

#[test]
fn inconsistent_bundles_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = Partition::contiguous(6, 2);
    let d0 = dir.path().join("s0");
    student(1).save_dir(&d0).unwrap();
    let path = dir.path().join("bundle.json");
    let e = Bundle::assemble(
        &path,
        &p,
        &[d0.clone(), dir.path().join("missing")],
        None,
        80.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("student 1 is missing"), "{e}");
    let d1 = dir.path().join("s1");
    student(2).save_dir(&d1).unwrap();
    Bundle::assemble(&path, &p, &[d0, d1], None, 80.0).unwrap();
    // Tamper: give class 5 to student 0 in the listed classes only.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["students"][0]["classes"] = serde_json::json!([0, 1, 2, 5]);
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Bundle::load(&path, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("student 0 lists classes"), "{e}");
    // A partition that leaves a condition without owner.
    v["students"][0]["classes"] = serde_json::json!([0, 1, 2]);
    v["partition"]["owner"] = serde_json::json!([0, 0, 0, 1, 1, 7]);
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Bundle::load(&path, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("condition 5"), "{e}");
}
