//! S3 presigned POST policies (browser-based uploads, AWS Signature Version 4), as pure functions.
//!
//! aws-sdk-s3 has no POST-policy helper, so the policy document is built here and signed with the
//! SigV4 primitives of aws-sigv4: the string to sign is the base64 policy, the key is the usual
//! `AWS4<secret>` → date → region → `s3` → `aws4_request` derivation.
//! See <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>.
//!
//! Also here: the attachment object keys, `YYYYMMDD/<uuid v4>` (UTC date of issue), and the UTC
//! date formats SigV4 uses.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// The only algorithm S3 POST uploads accept with SigV4.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What one upload authorization allows: one object, under one exact key, of 1..=`max_size` bytes,
/// until `expires_at`.
#[derive(Clone, Debug)]
pub struct PostPolicy<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub max_size: u64,
    pub region: &'a str,
    pub access_key_id: &'a str,
    /// Present with temporary credentials (IRSA, instance profiles): S3 needs it as a form field,
    /// so the policy has to allow it.
    pub session_token: Option<&'a str>,
    /// Signing time (x-amz-date and the credential scope date).
    pub signed_at: SystemTime,
    /// The policy's expiration (whole seconds; anything finer is truncated).
    pub expires_at: SystemTime,
}

impl PostPolicy<'_> {
    /// `<access key id>/<YYYYMMDD>/<region>/s3/aws4_request`.
    pub fn credential(&self) -> String {
        format!(
            "{}/{}/{}/s3/aws4_request",
            self.access_key_id,
            date_stamp(self.signed_at),
            self.region
        )
    }

    /// The policy document (JSON). Every form field the client sends, except `file`, `policy` and
    /// `x-amz-signature`, must match one condition: S3 refuses extra fields.
    pub fn document(&self) -> String {
        let mut conditions = vec![
            serde_json::json!({ "bucket": self.bucket }),
            serde_json::json!(["eq", "$key", self.key]),
            serde_json::json!(["content-length-range", 1, self.max_size]),
            serde_json::json!({ "x-amz-algorithm": ALGORITHM }),
            serde_json::json!({ "x-amz-credential": self.credential() }),
            serde_json::json!({ "x-amz-date": amz_date(self.signed_at) }),
        ];
        if let Some(token) = self.session_token {
            conditions.push(serde_json::json!({ "x-amz-security-token": token }));
        }
        serde_json::json!({
            "expiration": iso8601(self.expires_at),
            "conditions": conditions,
        })
        .to_string()
    }

    /// The form fields of the upload (the client adds the `file` field last).
    pub fn form_fields(&self, secret_access_key: &str) -> HashMap<String, String> {
        let policy = base64::engine::general_purpose::STANDARD.encode(self.document());
        let signature = sign(secret_access_key, self.signed_at, self.region, "s3", &policy);
        let mut fields = HashMap::from([
            ("key".to_string(), self.key.to_string()),
            ("x-amz-algorithm".to_string(), ALGORITHM.to_string()),
            ("x-amz-credential".to_string(), self.credential()),
            ("x-amz-date".to_string(), amz_date(self.signed_at)),
            ("policy".to_string(), policy),
            ("x-amz-signature".to_string(), signature),
        ]);
        if let Some(token) = self.session_token {
            fields.insert("x-amz-security-token".to_string(), token.to_string());
        }
        fields
    }
}

/// The SigV4 signature (lowercase hex) of `string_to_sign`, with the signing key derived from
/// `secret` for the date of `at`, `region` and `service`.
pub fn sign(secret: &str, at: SystemTime, region: &str, service: &str, string_to_sign: &str) -> String {
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, at, region, service);
    aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes())
}

/// A fresh attachment key: `YYYYMMDD/<uuid v4>`, dated `now` (UTC).
pub fn object_key(now: SystemTime) -> String {
    format!("{}/{}", date_stamp(now), uuid::Uuid::new_v4().hyphenated())
}

/// Whether `key` has the exact shape of [`object_key`]: a plausible `YYYYMMDD`, `/`, and a
/// lowercase hyphenated version-4 UUID. Anything else is never an attachment.
pub fn is_object_key(key: &str) -> bool {
    let Some((date, id)) = key.split_once('/') else {
        return false;
    };
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && {
        let month: u32 = date[4..6].parse().unwrap_or(0);
        let day: u32 = date[6..8].parse().unwrap_or(0);
        (1..=12).contains(&month) && (1..=31).contains(&day)
    };
    date_ok && uuid::Uuid::try_parse(id).is_ok_and(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == id)
}

/// UTC calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// The UTC calendar fields of `t` (whole seconds; times before 1970 clamp to the epoch).
pub fn utc(t: SystemTime) -> Utc {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Utc {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
    }
}

/// `YYYYMMDD` (UTC).
pub fn date_stamp(t: SystemTime) -> String {
    let u = utc(t);
    format!("{:04}{:02}{:02}", u.year, u.month, u.day)
}

/// `YYYYMMDDTHHMMSSZ` (UTC), the x-amz-date format.
pub fn amz_date(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` (UTC), the policy expiration format.
pub fn iso8601(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// AWS's published example: "Example: Browser-Based Upload using HTTP POST (Using AWS
    /// Signature Version 4)", S3 API reference. The base64 policy is the string to sign.
    #[test]
    fn aws_post_policy_example_vector() {
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        // The decoded document is AWS's example policy (CRLF line ends), dated 2015-12-29.
        let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(policy).unwrap()).unwrap();
        assert!(decoded.starts_with("{ \"expiration\": \"2015-12-30T12:00:00.000Z\",\r\n"));
        assert!(decoded.contains("\"AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request\""));
        let signed_at = at(1_451_347_200); // 2015-12-29T00:00:00Z
        assert_eq!(amz_date(signed_at), "20151229T000000Z");
        assert_eq!(
            sign(
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                signed_at,
                "us-east-1",
                "s3",
                policy
            ),
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    /// The AWS SigV4 test suite's `get-vanilla` case (`GET /` on example.amazonaws.com at
    /// 20150830T123600Z, us-east-1, service `service`): its string to sign and signature.
    #[test]
    fn aws_sigv4_test_suite_get_vanilla() {
        let string_to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63";
        assert_eq!(
            sign(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                at(1_440_938_160), // 2015-08-30T12:36:00Z
                "us-east-1",
                "service",
                string_to_sign
            ),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            utc(at(0)),
            Utc {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2000-02-29 (leap day), 2024-12-31T23:59:59, 2100-03-01 (no leap day in 2100).
        assert_eq!(date_stamp(at(951_782_400)), "20000229");
        assert_eq!(amz_date(at(1_735_689_599)), "20241231T235959Z");
        assert_eq!(iso8601(at(1_735_689_599)), "2024-12-31T23:59:59.000Z");
        assert_eq!(date_stamp(at(4_107_542_400)), "21000301");
        // Sub-second parts are truncated.
        assert_eq!(
            amz_date(at(1_735_689_599) + Duration::from_millis(999)),
            "20241231T235959Z"
        );
    }

    #[test]
    fn keys() {
        let now = at(1_735_689_599);
        let k = object_key(now);
        assert!(k.starts_with("20241231/"), "{k}");
        assert_eq!(k.len(), 45);
        assert!(is_object_key(&k), "{k}");
        assert_ne!(object_key(now), k, "random part");
        let id = &k[9..];
        for bad in [
            "".to_string(),
            id.to_string(),
            format!("2024123/{id}"),
            format!("20241331/{id}"),
            format!("20241200/{id}"),
            format!("2024123a/{id}"),
            format!("20241231/{}", id.to_uppercase()),
            format!("20241231/{}", id.replace('-', "")),
            format!("20241231/{id}/x"),
            format!("20241231//{id}"),
            format!("../20241231/{id}"),
            "20241231/00000000-0000-1000-8000-000000000000".to_string(), // version 1
        ] {
            assert!(!is_object_key(&bad), "{bad}");
        }
    }

    #[test]
    fn policy_document_and_fields() {
        let p = PostPolicy {
            bucket: "tassis-attachments",
            key: "20241231/5b1f3c1e-8a6f-4a8e-9d3c-0f6b2f7f6a11",
            max_size: 100_000_000,
            region: "eu-west-1",
            access_key_id: "AKIDEXAMPLE",
            session_token: None,
            signed_at: at(1_735_689_599),
            expires_at: at(1_735_689_599 + 86_400) + Duration::from_millis(500),
        };
        let doc: serde_json::Value = serde_json::from_str(&p.document()).unwrap();
        assert_eq!(doc["expiration"], "2025-01-01T23:59:59.000Z");
        assert_eq!(
            doc["conditions"],
            serde_json::json!([
                {"bucket": "tassis-attachments"},
                ["eq", "$key", "20241231/5b1f3c1e-8a6f-4a8e-9d3c-0f6b2f7f6a11"],
                ["content-length-range", 1, 100_000_000],
                {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                {"x-amz-credential": "AKIDEXAMPLE/20241231/eu-west-1/s3/aws4_request"},
                {"x-amz-date": "20241231T235959Z"},
            ])
        );
        let f = p.form_fields("secret");
        let mut names: Vec<&str> = f.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "key",
                "policy",
                "x-amz-algorithm",
                "x-amz-credential",
                "x-amz-date",
                "x-amz-signature"
            ]
        );
        let decoded = base64::engine::general_purpose::STANDARD.decode(&f["policy"]).unwrap();
        assert_eq!(decoded, p.document().as_bytes());
        assert_eq!(
            f["x-amz-signature"],
            sign("secret", p.signed_at, "eu-west-1", "s3", &f["policy"])
        );
        assert_eq!(f["x-amz-signature"].len(), 64);

        // Temporary credentials: the token is a field, and the policy allows exactly it.
        let t = PostPolicy {
            session_token: Some("tok/en+=="),
            ..p
        };
        let doc: serde_json::Value = serde_json::from_str(&t.document()).unwrap();
        assert_eq!(
            doc["conditions"][6],
            serde_json::json!({"x-amz-security-token": "tok/en+=="})
        );
        assert_eq!(t.form_fields("secret")["x-amz-security-token"], "tok/en+==");
    }
}
