# Plots for bench/run.sh (run from the results folder; data made by bench/plot.py):
#   e2e_throughput.png  user MB/s and CPU us per record vs record size, per matrix series
#   e2e_latency_cdf.png put->result latency CDFs (half-rate and max-rate cells)
series = system("cat raw/series.txt")
cdfs = system("cat raw/cdfs.txt")

set terminal pngcairo size 1400,560 font "DejaVu Sans,10" noenhanced
set output "e2e_throughput.png"
set multiplot layout 1,2 title "kinesis_producer end to end (kpl-bench -> daemon -> kp-sink), by record size"
set logscale x 2
set xtics ("100 B" 100, "1 KiB" 1024, "10 KiB" 10240, "50 KiB" 51200)
set grid
set key top left font ",8"
set xlabel "record size"
set ylabel "user data MB/s"
plot for [s in series] sprintf("raw/tput-%s.dat", s) using 1:3 with linespoints title s
set logscale y 10
set key top left font ",8"
set ylabel "CPU us per user record (client + daemon; direct: client)"
plot for [s in series] sprintf("raw/tput-%s.dat", s) using 1:4 with linespoints title s
unset multiplot

set output "e2e_latency_cdf.png"
set terminal pngcairo size 900,560 font "DejaVu Sans,10" noenhanced
unset logscale
set logscale x 10
set xtics auto
set ytics 0.1
set yrange [0:1]
set key bottom right
set xlabel "put -> result latency (ms)"
set ylabel "fraction of records"
set title "put -> result latency CDF (kpl-bench)"
plot for [c in cdfs] sprintf("raw/cdf-%s.txt", c) using 1:2 with lines lw 2 title c
