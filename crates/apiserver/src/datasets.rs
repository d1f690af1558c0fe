//! The data paths: content-addressed blobs, dataset manifests and task outputs. They are not
//! store objects (their bytes stay out of the revisioned store), so they have their own closed
//! request enum, parsed here before the object paths.

use crate::error::{ApiError, ApiResult};
use http::Method;

const PREFIX: &str = "/apis/kumo.dev/v1/";

/// One request on the data paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRequest {
    /// `PUT blobs/{sha256}`: the bytes, verified against the digest.
    PutBlob { digest: String },
    /// `GET blobs/{sha256}`.
    GetBlob { digest: String },
    /// `GET datasets`.
    ListDatasets,
    /// `GET datasets/{name}`: the dataset with its manifest.
    GetDataset { name: String },
    /// `PUT datasets/{name}`: a manifest whose every blob is already uploaded.
    PutDataset { name: String },
    /// `DELETE datasets/{name}`.
    DeleteDataset { name: String },
    /// `PUT namespaces/{ns}/mltasks/{name}/output/{rank}`: one replica's output manifest.
    PutOutput { ns: String, task: String, rank: u32 },
    /// `GET namespaces/{ns}/mltasks/{name}/output`: every rank's manifest of the task's run.
    GetOutput { ns: String, task: String },
}

/// The data request at `path`, `None` when the path is not a data path.
pub fn parse(method: &Method, path: &str) -> Option<ApiResult<DataRequest>> {
    let rest = path.strip_prefix(PREFIX)?;
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let not_allowed = || Err(ApiError::method_not_allowed(method, path));
    let owned = |s: &str| s.to_string();
    let req = match (segs.as_slice(), method) {
        (["blobs", d], &Method::PUT) => DataRequest::PutBlob { digest: owned(d) },
        (["blobs", d], &Method::GET) => DataRequest::GetBlob { digest: owned(d) },
        (["blobs", _], _) => return Some(not_allowed()),
        (["datasets"], &Method::GET) => DataRequest::ListDatasets,
        (["datasets"], _) => return Some(not_allowed()),
        (["datasets", n], &Method::GET) => DataRequest::GetDataset { name: owned(n) },
        (["datasets", n], &Method::PUT) => DataRequest::PutDataset { name: owned(n) },
        (["datasets", n], &Method::DELETE) => DataRequest::DeleteDataset { name: owned(n) },
        (["datasets", _], _) => return Some(not_allowed()),
        (["namespaces", ns, "mltasks", t, "output"], &Method::GET) => DataRequest::GetOutput {
            ns: owned(ns),
            task: owned(t),
        },
        (["namespaces", _, "mltasks", _, "output"], _) => return Some(not_allowed()),
        (["namespaces", ns, "mltasks", t, "output", rank], &Method::PUT) => {
            let Ok(rank) = rank.parse() else {
                return Some(Err(ApiError::bad_request(format!(
                    "output rank {rank:?} is not a number"
                ))));
            };
            DataRequest::PutOutput {
                ns: owned(ns),
                task: owned(t),
                rank,
            }
        }
        (["namespaces", _, "mltasks", _, "output", _], _) => return Some(not_allowed()),
        _ => return None,
    };
    Some(Ok(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Option<Result<DataRequest, u16>>) {
        let got = parse(&method, path).map(|r| r.map_err(|e| e.code()));
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn data_paths() {
        let p = "/apis/kumo.dev/v1/";
        check(
            Method::PUT,
            &format!("{p}blobs/abc"),
            Some(Ok(DataRequest::PutBlob {
                digest: "abc".into(),
            })),
        );
        check(Method::POST, &format!("{p}blobs/abc"), Some(Err(405)));
        check(
            Method::GET,
            &format!("{p}datasets"),
            Some(Ok(DataRequest::ListDatasets)),
        );
        check(
            Method::DELETE,
            &format!("{p}datasets/mnist"),
            Some(Ok(DataRequest::DeleteDataset {
                name: "mnist".into(),
            })),
        );
        check(
            Method::PUT,
            &format!("{p}namespaces/ml/mltasks/t/output/1"),
            Some(Ok(DataRequest::PutOutput {
                ns: "ml".into(),
                task: "t".into(),
                rank: 1,
            })),
        );
        check(
            Method::PUT,
            &format!("{p}namespaces/ml/mltasks/t/output/x"),
            Some(Err(400)),
        );
        check(
            Method::GET,
            &format!("{p}namespaces/ml/mltasks/t/output"),
            Some(Ok(DataRequest::GetOutput {
                ns: "ml".into(),
                task: "t".into(),
            })),
        );
        // Object paths are not data paths.
        check(Method::GET, &format!("{p}namespaces/ml/mltasks/t"), None);
        check(Method::GET, &format!("{p}namespaces/ml/mltasks"), None);
        check(Method::GET, "/api/v1/pods", None);
    }
}
