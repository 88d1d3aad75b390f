//! The in-process baseline of the benchmarks: one ONNX Runtime session running a model back to
//! back on fixed inputs, with the library the server loads. Prints JSON: infer/s, p50, p99 (µs).
//!
//!     ort_inprocess MODEL.onnx NAME:DTYPE:D1,D2 [NAME:DTYPE:DIMS ...] [--iterations N] [--threads T]

use std::time::Instant;

use ort::session::Session;
use ort::value::{DynValue, Tensor};

fn input(spec: &str) -> Result<(String, DynValue), String> {
    let mut parts = spec.splitn(3, ':');
    let (name, dtype, dims) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let shape: Vec<i64> = dims
        .split(',')
        .map(|d| d.parse().map_err(|_| format!("bad dims in '{spec}'")))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product::<i64>() as usize;
    let value: DynValue = match dtype {
        "INT32" => Tensor::from_array((shape, (0..n as i32).collect::<Vec<_>>()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        "INT8" => Tensor::from_array((shape, (0..n).map(|i| i as i8).collect::<Vec<_>>()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        "FP32" => Tensor::from_array((shape, (0..n).map(|i| (i % 97) as f32 / 97.0).collect::<Vec<_>>()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        other => return Err(format!("unsupported datatype '{other}'")),
    };
    Ok((name.to_string(), value))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut iterations = 10_000usize;
    let mut threads = 0usize;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iterations" => iterations = it.next().and_then(|v| v.parse().ok()).ok_or("--iterations N")?,
            "--threads" => threads = it.next().and_then(|v| v.parse().ok()).ok_or("--threads N")?,
            _ => positional.push(a.clone()),
        }
    }
    let (model, specs) =
        positional.split_first().ok_or("usage: ort_inprocess MODEL.onnx NAME:DTYPE:DIMS ...")?;
    let env = nereid_onnxruntime::environment()?;
    let mut builder = Session::builder(&env).map_err(|e| e.to_string())?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| e.to_string())?;
    }
    let mut session = builder.commit_from_file(model).map_err(|e| e.to_string())?;
    let inputs: Vec<(String, DynValue)> = specs.iter().map(|s| input(s)).collect::<Result<_, _>>()?;
    let mut run = || -> Result<(), String> {
        let feed: Vec<(&str, &DynValue)> = inputs.iter().map(|(n, v)| (n.as_str(), v)).collect();
        session.run(feed).map(drop).map_err(|e| e.to_string())
    };
    for _ in 0..iterations / 10 {
        run()?;
    }
    let mut times = Vec::with_capacity(iterations);
    let start = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{{\"infer_per_s\": {:.1}, \"p50_us\": {:.2}, \"p99_us\": {:.2}}}",
        iterations as f64 / total,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
