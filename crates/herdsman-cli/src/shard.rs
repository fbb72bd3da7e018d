//! `--shard I/N`: what a shard is, read from the flag (or job file) and the launcher's
//! environment. How a shard reads its part of the inputs and writes its output is
//! `shard_io`; the cut itself is `herdsman_io::shard_range`.
//!
//! This module must never accept a shard that does not exist (an index at or above the
//! count, a count of 0) or guess an index that no variable gives.

/// Where `--shard auto/N` looks for the shard's index, in this order: Kubernetes Indexed
/// Jobs, Slurm job arrays, AWS Batch array jobs.
pub const INDEX_VARIABLES: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

/// One shard of a job: `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
    /// The environment variable the index came from (`--shard auto`).
    pub from: Option<&'static str>,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Refuses a Slurm array whose tasks are not numbered one after the other from its first
/// index (`--array=0-15:2`, `--array=1,3,7`), or that has another number of tasks than the
/// shards: some shards would never run, and their records would be missing from the output.
fn check_slurm_array(
    spec: &str,
    count: u64,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let var = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
    let fix = "give the shard yourself (--shard I/N), or use an array numbered without gaps, such as --array=0-7";
    if let Some(step) = var("SLURM_ARRAY_TASK_STEP").filter(|&s| s != 1) {
        return Err(format!(
            "--shard {spec}: the Slurm array steps by {step} (SLURM_ARRAY_TASK_STEP), so its task ids are not shard numbers; {fix}"
        ));
    }
    if let Some(tasks) = var("SLURM_ARRAY_TASK_COUNT").filter(|&n| n != count) {
        return Err(format!(
            "--shard {spec}: the Slurm array has {tasks} tasks (SLURM_ARRAY_TASK_COUNT) but the job has {count} shards: some shards would never run; give --shard auto/{tasks}, or size the array to {count} tasks"
        ));
    }
    if let (Some(min), Some(max)) = (var("SLURM_ARRAY_TASK_MIN"), var("SLURM_ARRAY_TASK_MAX")) {
        if max.checked_sub(min).map(|d| d + 1) != Some(count) {
            return Err(format!(
                "--shard {spec}: the Slurm array's task ids run from {min} to {max}, which is not {count} ids in a row; {fix}"
            ));
        }
    }
    Ok(())
}

/// The accepted forms, for messages.
const FORMS: &str = "write --shard I/N with shards numbered from 0 (--shard 0/4 to --shard 3/4 for four shards), or --shard auto/N to take I from JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX";

impl Shard {
    /// Parses `I/N`, `auto/N` or `auto` (`env` reads the environment): see [`INDEX_VARIABLES`].
    /// `auto` alone takes N from a Slurm array (`SLURM_ARRAY_TASK_COUNT`); a Slurm index is
    /// counted from the array's first index (`SLURM_ARRAY_TASK_MIN`).
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let spec = spec.trim();
        let number = |what: &str, s: &str| -> Result<u64, String> {
            s.trim().parse::<u64>().map_err(|_| {
                format!(
                    "--shard `{spec}`: {what} `{}` is not a whole number; {FORMS}",
                    s.trim()
                )
            })
        };
        let (index_text, count_text) = match spec.split_once('/') {
            Some((i, n)) => (i.trim(), Some(n)),
            None if spec == "auto" => ("auto", None),
            None => return Err(format!("--shard `{spec}` is not a shard; {FORMS}")),
        };
        let slurm_count = || -> Result<Option<u64>, String> {
            env("SLURM_ARRAY_TASK_COUNT")
                .map(|n| number("SLURM_ARRAY_TASK_COUNT", &n))
                .transpose()
        };
        let count = match count_text {
            Some(n) => number("the number of shards", n)?,
            None => match (env("SLURM_ARRAY_TASK_ID"), slurm_count()?) {
                (Some(_), Some(n)) => n,
                _ => {
                    return Err(
                        "--shard auto finds the number of shards only in a Slurm array (SLURM_ARRAY_TASK_COUNT is not set); give it: --shard auto/N"
                            .to_string(),
                    )
                }
            },
        };
        let (index, from) = if index_text == "auto" {
            let Some((name, value)) = INDEX_VARIABLES
                .iter()
                .find_map(|&name| env(name).map(|v| (name, v)))
            else {
                return Err(format!(
                    "--shard {spec} takes the shard's index from JOB_COMPLETION_INDEX (Kubernetes), SLURM_ARRAY_TASK_ID (Slurm) or AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch), but none is set; give the index yourself: --shard I/{}",
                    count_text.map_or("N", str::trim)
                ));
            };
            let mut index = number(name, &value)?;
            if name == "SLURM_ARRAY_TASK_ID" {
                let min = env("SLURM_ARRAY_TASK_MIN")
                    .map(|m| number("SLURM_ARRAY_TASK_MIN", &m))
                    .transpose()?
                    .unwrap_or(0);
                index = index.checked_sub(min).ok_or_else(|| {
                    format!(
                        "--shard {spec}: SLURM_ARRAY_TASK_ID {index} is below SLURM_ARRAY_TASK_MIN {min}; give the shard yourself: --shard I/N"
                    )
                })?;
                check_slurm_array(spec, count, &env)?;
            }
            (index, Some(name))
        } else {
            (number("the shard's index", index_text)?, None)
        };
        if count == 0 {
            return Err(format!(
                "--shard {spec}: the number of shards must be at least 1; {FORMS}"
            ));
        }
        if index >= count {
            let came = from.map_or(String::new(), |v| format!(" (from {v})"));
            return Err(format!(
                "--shard {spec}: shard {index}{came} does not exist among {count} shards, which are numbered 0 to {}; {FORMS}",
                count - 1
            ));
        }
        Ok(Shard { index, count, from })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str, vars: &[(&str, &str)]) -> Result<Shard, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Shard::parse(spec, move |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn shards_parse_from_flags_and_launcher_variables() {
        let s = parse("2/5", &[]).unwrap();
        assert_eq!((s.index, s.count, s.from), (2, 5, None));
        let s = parse("auto/4", &[("JOB_COMPLETION_INDEX", "3")]).unwrap();
        assert_eq!((s.index, s.count), (3, 4));
        assert_eq!(s.from, Some("JOB_COMPLETION_INDEX"));
        let s = parse("auto/4", &[("AWS_BATCH_JOB_ARRAY_INDEX", "0")]).unwrap();
        assert_eq!((s.index, s.count), (0, 4));
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        let s = parse("auto", &slurm).unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        let with_max = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ];
        assert_eq!(parse("auto/3", &with_max).unwrap().index, 2);
        assert_eq!(s.to_string(), "2/3");
    }

    #[test]
    fn bad_shards_say_the_right_form() {
        for (spec, vars) in [
            ("3/3", &[][..]),
            ("0/0", &[]),
            ("x/3", &[]),
            ("1/y", &[]),
            ("-1/3", &[]),
            ("1", &[]),
            ("", &[]),
            ("auto/3", &[]),
            ("auto", &[("JOB_COMPLETION_INDEX", "0")]),
            ("auto/2", &[("JOB_COMPLETION_INDEX", "2")]),
            // Arrays whose task ids are not the shard numbers 0..N-1 once shifted.
            (
                "auto",
                &[
                    ("SLURM_ARRAY_TASK_ID", "6"),
                    ("SLURM_ARRAY_TASK_COUNT", "8"),
                    ("SLURM_ARRAY_TASK_STEP", "2"),
                ],
            ),
            (
                "auto",
                &[
                    ("SLURM_ARRAY_TASK_ID", "3"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_MAX", "7"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ],
            ),
            (
                "auto/8",
                &[
                    ("SLURM_ARRAY_TASK_ID", "2"),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                ],
            ),
        ] {
            let e = parse(spec, vars).unwrap_err();
            assert!(e.contains("--shard"), "{spec}: {e}");
        }
    }
}
