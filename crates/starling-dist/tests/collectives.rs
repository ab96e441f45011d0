//! Two real processes (this test binary run twice as ranks 0 and 1) rendezvous over a TCPStore and
//! drive every Gloo collective; then rank 1 stops answering and rank 0's collective times out with
//! a message that names rank 1.

use starling_dist::{Backend, DistEnv, Error, ProcessGroup};
use std::process::Command;
use std::time::Duration;
use tch::{Kind, Tensor};

const WORKER: &str = "STARLING_DIST_TEST_WORKER";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The body each rank runs; a no-op unless the parent test started this process as a rank.
#[test]
fn rank_worker() {
    if std::env::var_os(WORKER).is_none() {
        return;
    }
    let env = DistEnv::from_env().expect("env").expect("RANK set");
    let mut g = ProcessGroup::join(&env, Backend::Gloo, Duration::from_secs(3)).expect("join");
    let (r, w) = (g.rank() as f64, g.world() as f64);
    g.mark_step(1);

    let t = Tensor::from_slice(&[r + 1.0, 10.0 * (r + 1.0)]).to_kind(Kind::Float);
    g.all_reduce_sum(&t).expect("all-reduce");
    assert_eq!(Vec::<f32>::try_from(&t).expect("vec"), vec![3.0, 30.0]);

    let b = Tensor::from_slice(&[r * 5.0 + 1.0; 3]);
    g.broadcast(&b, 1).expect("broadcast");
    assert_eq!(
        Vec::<f64>::try_from(&b).expect("vec"),
        vec![6.0; 3],
        "rank 1's values everywhere"
    );

    // reduce-scatter: input [0,1,2,3] + r; rank k gets elements 2k..2k+2 summed over ranks.
    let input = (Tensor::arange(4, (Kind::Float, tch::Device::Cpu)) + r).contiguous();
    let out = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
    g.reduce_scatter_sum(&out, &input).expect("reduce-scatter");
    let k = g.rank() as f32;
    assert_eq!(
        Vec::<f32>::try_from(&out).expect("vec"),
        vec![4.0 * k + 1.0, 4.0 * k + 3.0]
    );

    let mine = Tensor::from_slice(&[r as i64, 100 + r as i64]);
    let all = Tensor::zeros([4], (Kind::Int64, tch::Device::Cpu));
    g.all_gather(&all, &mine).expect("all-gather");
    assert_eq!(
        Vec::<i64>::try_from(&all).expect("vec"),
        vec![0, 100, 1, 101]
    );

    // Mismatched shapes are refused before reaching c10d.
    assert!(matches!(g.all_gather(&mine, &mine), Err(Error::Tensor(_))));

    g.store_set(&format!("hello/{}", g.rank()), b"hi")
        .expect("set");
    let peer = 1 - g.rank();
    assert_eq!(g.store_get(&format!("hello/{peer}")).expect("get"), b"hi");
    g.barrier().expect("barrier");
    assert!(g.comm_time().1 >= 5, "collectives are counted");
    assert_eq!(w, 2.0);

    // Rank 1 hangs (alive, not answering); rank 0's next collective must time out and name it.
    if g.rank() == 1 {
        std::thread::sleep(Duration::from_secs(8));
        return;
    }
    g.mark_step(2);
    let t0 = std::time::Instant::now();
    let err = g
        .all_reduce_sum(&t)
        .expect_err("rank 1 never joins this all-reduce");
    let msg = err.to_string();
    println!(
        "hang diagnosis after {:.1} s: {msg}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(7),
        "gave up near the 3 s timeout"
    );
    assert!(msg.contains("rank 0: all-reduce (step 2"), "{msg}");
    assert!(msg.contains("this rank waits in collective #"), "{msg}");
    assert!(
        msg.contains("rank 1 last entered collective #")
            && msg.contains("(step 1) (behind: hung or dead)"),
        "{msg}"
    );
}

#[test]
fn two_processes_run_every_collective_and_a_hang_is_named() {
    run_ranks("rank_worker", 2);
}

/// Spawns `world` ranks of this test binary running the test `body`; each must pass it.
fn run_ranks(body: &str, world: usize) {
    let port = free_port().to_string();
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args([body, "--exact", "--nocapture", "--test-threads=1"])
                .env(WORKER, "1")
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn rank")
        })
        .collect();
    for (rank, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("wait");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("--- rank {rank} ---\n{text}");
        assert!(out.status.success(), "rank {rank} failed:\n{text}");
        assert!(text.contains("1 passed"), "rank {rank} ran {body}:\n{text}");
    }
}

fn floats(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double)).expect("vec")
}

/// A 2 x 2 mesh (tensor parallel 2 x data parallel 2): subgroups registered with c10d by name,
/// and each collective that autograd understands, forward and backward, on the tensor-parallel
/// group; a plain all-reduce on the data-parallel group.
#[test]
fn mesh_worker() {
    use starling_torch::collective;
    if std::env::var_os(WORKER).is_none() {
        return;
    }
    let env = DistEnv::from_env().expect("env").expect("RANK set");
    let mut world = ProcessGroup::join(&env, Backend::Gloo, Duration::from_secs(20)).expect("join");
    let rank = world.rank();
    let mesh = starling_dist::mesh::Mesh::new(world.world(), 2).expect("mesh");
    let (tp, mut dp) = mesh.groups(&mut world).expect("groups");
    assert_eq!((tp.world(), tp.rank()), (2, rank % 2));
    assert_eq!((dp.world(), dp.rank()), (2, rank / 2));
    assert_eq!(tp.name(), format!("{}/tp{}", world.name(), rank / 2));
    let k = tp.rank() as f64;
    let name = tp.name().to_string();

    // all-gather: y = [x_0, x_1]; loss = Σ y·w on both ranks, so x_k's gradient is 2·w[2k..2k+2].
    let x = Tensor::from_slice(&[10.0 * k + 1.0, 10.0 * k + 2.0]).set_requires_grad(true);
    let y = collective::all_gather(&x, &name).expect("all-gather");
    assert_eq!(floats(&y), vec![1.0, 2.0, 11.0, 12.0]);
    let w = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0]);
    (&y * &w).sum(Kind::Double).backward();
    assert_eq!(
        floats(&x.grad()),
        vec![2.0 * (2.0 * k + 1.0), 2.0 * (2.0 * k + 2.0)]
    );

    // The same gather in bfloat16 (FSDP's mixed precision): values rounded to bf16 (1 + 2^-10
    // is not a bf16); the gradient comes back in fp32, summed over the ranks in fp32: rank 0's
    // 1 and rank 1's 2^-8 add up to 1 + 2^-8, which a bf16 sum would round back to 1.
    let x = Tensor::from_slice(&[1.0f32 + 1.0 / 1024.0, 2.0 + k as f32]).set_requires_grad(true);
    let y = collective::all_gather_bf16(&x, &name).expect("bf16 all-gather");
    assert_eq!(y.kind(), Kind::BFloat16);
    assert_eq!(floats(&y), vec![1.0, 2.0, 1.0, 3.0]);
    let w = if k == 0.0 { 1.0 } else { 1.0 / 256.0 };
    (&y * w).sum(Kind::Float).backward();
    assert_eq!(x.grad().kind(), Kind::Float);
    assert_eq!(floats(&x.grad()), vec![1.0 + 1.0 / 256.0; 2]);

    // Deferred: backward leaves the reduce-scatter running; the gradient lands at the finish.
    let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let y = collective::all_gather_deferred(&x, &name, true).expect("deferred all-gather");
    assert_eq!(y.kind(), Kind::BFloat16);
    (&y * w).sum(Kind::Float).backward();
    assert!(!x.grad().defined(), "no gradient before the finish");
    collective::finish_reductions().expect("finish");
    assert_eq!(floats(&x.grad()), vec![1.0 + 1.0 / 256.0; 2]);
    let y = collective::all_gather_deferred(&x, &name, false).expect("fp32");
    (&y * w).sum(Kind::Float).backward();
    collective::finish_reductions().expect("finish");
    assert_eq!(
        floats(&x.grad()),
        vec![2.0 + 2.0 / 256.0; 2],
        "added to the gradient"
    );

    // reduce-scatter: y_k = Σ_ranks x[2k..2k+2]; loss = Σ y·(k+1): x's gradient is [1,1,2,2].
    let x = (Tensor::arange(4, (Kind::Double, tch::Device::Cpu)) + k).set_requires_grad(true);
    let y = collective::reduce_scatter(&x, &name).expect("reduce-scatter");
    assert_eq!(floats(&y), vec![4.0 * k + 1.0, 4.0 * k + 3.0]);
    (&y * (k + 1.0)).sum(Kind::Double).backward();
    assert_eq!(floats(&x.grad()), vec![1.0, 1.0, 2.0, 2.0]);

    // Megatron's pair: f is identity forward, all-reduce backward; g the other way round.
    let x = Tensor::from_slice(&[k + 1.0]).set_requires_grad(true);
    let y = collective::copy_to_group(&x, &name).expect("f");
    assert_eq!(floats(&y), vec![k + 1.0]);
    (&y * (k + 1.0)).sum(Kind::Double).backward();
    assert_eq!(floats(&x.grad()), vec![3.0], "1 + 2 over the two ranks");
    let x = Tensor::from_slice(&[k + 1.0]).set_requires_grad(true);
    let y = collective::reduce_from_group(&x, &name).expect("g");
    assert_eq!(floats(&y), vec![3.0]);
    (&y * (k + 1.0)).sum(Kind::Double).backward();
    assert_eq!(floats(&x.grad()), vec![k + 1.0]);

    // An unknown group is an error, not a crash.
    let e = collective::all_gather(&x, "no-such-group").expect_err("unknown group");
    assert!(e.to_string().contains("no-such-group"), "{e}");

    // The data-parallel group sums over ranks {r, r+2}.
    let t = Tensor::from_slice(&[rank as f32]);
    dp.all_reduce_sum(&t).expect("dp all-reduce");
    assert_eq!(
        Vec::<f32>::try_from(&t).expect("vec"),
        vec![(2 * (rank % 2) + 2) as f32]
    );
}

/// DDP's overlapped reducer: buckets of one parameter each start during backward; a parameter
/// that got no gradient is reduced as zeros; only an armed backward reduces.
#[test]
fn reducer_worker() {
    use starling_torch::collective::Reducer;
    if std::env::var_os(WORKER).is_none() {
        return;
    }
    let env = DistEnv::from_env().expect("env").expect("RANK set");
    let world = ProcessGroup::join(&env, Backend::Gloo, Duration::from_secs(20)).expect("join");
    let r = world.rank() as f64;
    let a = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
    let b = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
    let unused = Tensor::from_slice(&[5.0f64]).set_requires_grad(true);
    let mut red = Reducer::new(&[&a, &b, &unused], world.name(), 2, 8).expect("reducer");
    // Not armed: gradients stay this rank's own.
    ((&a * (r + 1.0)).sum(Kind::Double) + &b * (r + 2.0))
        .sum(Kind::Double)
        .backward();
    assert_eq!(floats(&a.grad()), vec![r + 1.0, r + 1.0]);
    let _ = a.grad().zero_();
    let _ = b.grad().zero_();
    red.arm();
    ((&a * (r + 1.0)).sum(Kind::Double) + &b * (r + 2.0))
        .sum(Kind::Double)
        .backward();
    red.finish().expect("finish");
    // The mean over the two ranks: a (1 + 2) / 2, b (2 + 3) / 2, unused 0.
    assert_eq!(floats(&a.grad()), vec![1.5, 1.5]);
    assert_eq!(floats(&b.grad()), vec![2.5]);
    assert_eq!(floats(&unused.grad()), vec![0.0]);
}

#[test]
fn the_overlapped_reducer_averages_every_gradient() {
    run_ranks("reducer_worker", 2);
}

#[test]
fn a_two_by_two_mesh_runs_autograd_collectives_on_its_subgroups() {
    run_ranks("mesh_worker", 4);
}

#[test]
fn environment_errors_name_the_variable() {
    // Only this test touches these variables in this process (the workers run in children).
    std::env::set_var("RANK", "3");
    std::env::set_var("WORLD_SIZE", "2");
    std::env::set_var("MASTER_ADDR", "127.0.0.1");
    std::env::set_var("MASTER_PORT", "29500");
    let e = DistEnv::from_env().expect_err("rank outside the world");
    assert!(
        e.to_string()
            .starts_with("RANK: rank 3 is outside a world of 2"),
        "{e}"
    );
    std::env::set_var("RANK", "0");
    std::env::set_var("MASTER_PORT", "port");
    let e = DistEnv::from_env().expect_err("bad port");
    assert_eq!(e.to_string(), "MASTER_PORT: `port` is not a valid number");
    for v in ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
        std::env::remove_var(v);
    }
}
